"""Verify's timings: EdgeTAM (exact architecture, random weights) on CPU or CUDA.

Compares, in one run: our path (image encoded once, embedding reused for every prompt; folded
RepViT backbone, plus CUDA graphs on CUDA) vs the plain model, and vs the user's naive per-call
full forward that re-encodes the image for every prompt. Also checks the accelerated outputs
equal the plain ones within tolerance.
Usage: python benchmarks/bench_verify.py [cpu|cuda] [runs] [--json PATH]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgetam_provision.verify.run import ensure_env_offline

ensure_env_offline()

from common import machine  # noqa: E402

from edgetam_provision.repos import EDGETAM_REPO  # noqa: E402
from edgetam_provision.verify.run import VerifyRequest, plan_cases  # noqa: E402
from edgetam_provision.verify.runtime import synchronize  # noqa: E402
from edgetam_provision.verify.segment import run  # noqa: E402
from edgetam_provision.verify.synthetic import build_model_files, install_into_cache  # noqa: E402

USER_MPS_MS = {"single point": 8491, "two points": 737, "box": 42, "two objects": 1679}


def naive_full_forward(cache: Path, device: str, runs: int) -> dict[str, float]:
    """The user's method: processor(image + prompts) -> model(pixel_values, prompts) per call."""
    import torch
    from PIL import Image
    from transformers import EdgeTamModel, Sam2Processor

    model = EdgeTamModel.from_pretrained(EDGETAM_REPO, cache_dir=cache, local_files_only=True)
    model = model.to(device).eval()
    proc = Sam2Processor.from_pretrained(EDGETAM_REPO, cache_dir=cache, local_files_only=True)
    plan = plan_cases(VerifyRequest(cache=str(cache)))
    image_path, cases = plan.image, plan.cases
    image = Image.open(image_path).convert("RGB")
    out: dict[str, float] = {}
    with torch.inference_mode():
        for case in cases:
            kw = ({"input_points": [case.points], "input_labels": [case.labels]} if case.points
                  else {"input_boxes": [[case.box]]})
            times = []
            for _ in range(runs + 1):
                t0 = time.perf_counter()
                inputs = proc(images=image, return_tensors="pt", **kw).to(device)
                sizes = inputs.pop("original_sizes")
                res = model(**inputs, multimask_output=True)
                proc.post_process_masks(res.pred_masks, sizes)
                synchronize(torch, device)
                times.append((time.perf_counter() - t0) * 1000)
            out[case.name] = statistics.median(times[1:])
    return out


def main() -> dict:
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        install_into_cache(cache, EDGETAM_REPO, build_model_files())
        reports = {}
        for mode, accelerate in (("eager", False), ("accelerated", True)):
            req = VerifyRequest(cache=str(cache), device=device, runs=runs, quality_gate=False,
                                out=str(cache / f"overlays-{mode}"), accelerate=accelerate)
            reports[mode] = run(req, lambda m: None)
        naive = naive_full_forward(cache, device, max(2, runs // 2))
    return {"machine": machine(), "device": device, "runs": runs, "reports": reports, "naive_ms": naive}


def render(res: dict) -> str:
    reps = res["reports"]
    eager = reps["eager"]
    lines = [f"### verify on {res['device']} ({eager['versions']['torch']}, transformers "
             f"{eager['versions']['transformers']}; median of {res['runs']} warm runs)", "",
             f"load {eager['load_s']:.2f} s, first inference {eager['first_inference_s']:.2f} s, "
             f"whole verify {eager['total_s']:.1f} s", "",
             "| step | " + " | ".join(f"{m} (ms)" for m in reps)
             + " | naive full forward (ms) | user's MPS (ms) |",
             "|---|" + "---:|" * (len(reps) + 2)]
    lines.append("| image encode | " + " | ".join(f"{r['encode_ms']:.1f}" for r in reps.values()) + " | | |")
    for i, case in enumerate(eager["cases"]):
        cells = " | ".join(f"{r['cases'][i]['latency_ms']:.1f}" for r in reps.values())
        lines.append(f"| {case['name']} | {cells} | {res['naive_ms'][case['name']]:.1f} | "
                     f"{USER_MPS_MS[case['name']]} |")
    lines.append("| **four cases, warm** | " + " | ".join(f"**{r['four_cases_warm_ms']:.1f}**"
                                                        for r in reps.values())
                 + f" | **{sum(res['naive_ms'].values()):.1f}** | {sum(USER_MPS_MS.values())} |")
    if "accelerated" in reps:
        acc = reps["accelerated"]["acceleration"]
        def diff(v: dict) -> str:
            if "max_abs_diff" in v:
                return f" (max abs diff {v['max_abs_diff']:.1e})"
            if "relative_diff" in v:
                return f" (relative diff {v['relative_diff']:.1e})"
            return f" ({v['why']})" if v.get("why") else ""

        lines += ["", "Accelerated steps: " + ", ".join(f"{k}: {v['mode']}{diff(v)}"
                                                        for k, v in acc.items() if isinstance(v, dict))]
        same = all(abs(a["objects"][j]["area"] - b["objects"][j]["area"]) <= 0.001 * 1800 * 1200
                   for a, b in zip(eager["cases"], reps["accelerated"]["cases"], strict=True)
                   for j in range(len(a["objects"])))
        lines.append(f"Masks of eager and accelerated runs agree (area within 0.1%): {same}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = main()
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(result, indent=1, default=str))
    print(render(result))
