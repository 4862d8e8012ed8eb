"""How far EdgeTAM's predicted IoU scores move between transformers releases (sets the tolerance).

The random-weight stand-in (exact architecture, fixed seed) is saved once, into a cache under the
real repo name, and `provision verify` runs it on the truck photo with the reference prompts in
each environment given: ``label=PYTHONPATH-overlay`` (empty overlay: this venv as it is). Prints
the largest score difference per case against the first environment.

    python benchmarks/score_drift.py 5.24= 4.57=/tmp/tf457
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edgetam_provision.repos import BACKBONE_REPO, EDGETAM_REPO
from edgetam_provision.verify.synthetic import build_model_files, install_into_cache

# What transformers < 5.24 reads of the backbone repo offline (the fields timm's own config has).
BACKBONE_CONFIG = {"architecture": "repvit_m1", "num_classes": 1000, "num_features": 512,
                   "global_pool": "avg", "pretrained_cfg": {"tag": "dist_in1k", "input_size": [3, 224, 224],
                                                            "mean": [0.485, 0.456, 0.406],
                                                            "std": [0.229, 0.224, 0.225]}}


def scores(cache: Path, overlay: str) -> tuple[str, dict[str, list[list[float]]]]:
    env = {**os.environ, "PYTHONPATH": overlay} if overlay else dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "edgetam_provision", "verify", "--cache-dir", str(cache),
                           "--device", "cpu", "--runs", "1", "--no-quality-gate", "--json"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    report = json.loads(proc.stdout)["report"]
    return report["versions"]["transformers"], {c["name"]: [o["iou_scores"] for o in c["objects"]]
                                                for c in report["cases"]}


def main(envs: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        install_into_cache(cache, EDGETAM_REPO, build_model_files(seed=0))
        install_into_cache(cache, BACKBONE_REPO, {"config.json": json.dumps(BACKBONE_CONFIG).encode()})
        runs = [(label, *scores(cache, overlay)) for label, _, overlay in (e.partition("=") for e in envs)]
    _label, base_version, base = runs[0]
    print(f"| transformers | case | scores | max abs diff vs {base_version} |\n|---|---|---|---:|")
    for _label, version, got in runs:
        for case, objs in got.items():
            pairs = [(a, b) for o, p in zip(objs, base[case], strict=True) for a, b in zip(o, p, strict=True)]
            diff = max(abs(a - b) for a, b in pairs)
            print(f"| {version} | {case} | {objs} | {diff:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["current="])
