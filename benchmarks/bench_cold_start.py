"""Cold start: `provision --help`, and `provision verify` from process start to verdict (CPU).

The verify run uses the random-weight model of the exact architecture in a temporary cache, with
one warm run per case (`--runs 1`), as `make setup` would after a restore.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import ROOT, interleave, machine, sh, table

from edgetam_provision.repos import EDGETAM_REPO
from edgetam_provision.verify.synthetic import build_model_files, install_into_cache

PY = sys.executable
NAIVE = """
import sys
from PIL import Image
from transformers import EdgeTamModel, Sam2Processor
import torch
cache, repo, image = sys.argv[1:4]
model = EdgeTamModel.from_pretrained(repo, cache_dir=cache, local_files_only=True).eval()
proc = Sam2Processor.from_pretrained(repo, cache_dir=cache, local_files_only=True)
inputs = proc(images=Image.open(image).convert("RGB"), input_points=[[[[500, 375]]]], input_labels=[[[1]]],
              return_tensors="pt")
with torch.inference_mode():
    model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=True)
"""


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        install_into_cache(cache, EDGETAM_REPO, build_model_files())
        naive = cache / "naive.py"
        naive.write_text(NAIVE)
        image = ROOT / "edgetam_provision" / "verify" / "assets" / "truck.jpg"
        help_times = interleave({"provision --help": lambda: sh(f"{PY} -m edgetam_provision --help"),
                                 "python -c pass": lambda: sh(f"{PY} -c pass")}, 7)
        verify_times = interleave({
            "provision verify (start to verdict)": lambda: sh(
                f"{PY} -m edgetam_provision verify --device cpu --runs 1 --no-quality-gate "
                f"--cache-dir {cache} --out {cache / 'o'}"),
            "naive script: import, from_pretrained, one forward": lambda: sh(
                f"HF_HUB_OFFLINE=1 {PY} {naive} {cache} {EDGETAM_REPO} {image}"),
            "python: import what verify needs": lambda: sh(
                f"{PY} -c 'import torch; from transformers import EdgeTamModel, Sam2Processor'"),
        }, 3)
    return "\n".join([f"Machine: {machine()}\n",
                      table("Cold start of the CLI", help_times, "python -c pass"),
                      table("provision verify, process start to verdict (CPU, --runs 1)", verify_times,
                            "naive script: import, from_pretrained, one forward")])


if __name__ == "__main__":
    print(main())
