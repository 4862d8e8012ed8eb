"""The yardstick for the real checkpoint: the user's reference run on the truck photo.

Pure functions over a verify report's cases, so they are tested on recorded reports. The
reference scores are the real `yonigozlan/EdgeTAM-hf` weights' predicted IoU for each of the
three masks of each prompt (``assets/reference.json``).

TOLERANCE, reasoned: fp32 differences between MPS, CUDA and CPU move these scores by ~1e-3.
Between transformers 4.57.6 and 5.24.0 (the newest release) preprocessing is bit-identical on
the truck photo and the random-weight stand-in's scores moved by at most 0.007
(``benchmarks/results/score_drift.md``). 0.05 keeps a 7x margin over that and is still far
below what other weights produce (the stand-in misses the reference by up to 0.46).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

TOLERANCE = 0.05
MIN_BOX_INSIDE = 0.95  # share of the box case's mask that lies inside the box
MIN_BOX_FILL = 0.25  # share of the box that the box case's mask fills (the truck fills most of it)
MEANING = ("other weights or another revision than the reference run's, or a transformers release "
           "that changed preprocessing (`provision doctor` shows the versions)")


def load_reference() -> dict[str, Any]:
    """The reference run: image, prompts, scores, timings."""
    reference: dict[str, Any] = json.loads(
        (resources.files("edgetam_provision.verify") / "assets" / "reference.json").read_text())
    return reference


def compare_scores(cases: list[dict[str, Any]], reference: dict[str, Any],
                   tolerance: float = TOLERANCE) -> list[str]:
    """One failure line per reference case whose three scores are not all within `tolerance`."""
    failures = []
    ours = {c["name"]: c for c in cases}
    for ref in reference["cases"]:
        if ref.get("iou_scores") is None:
            continue
        case = ours.get(ref["name"])
        if case is None:
            failures.append(f"{ref['name']}: missing from this run, the reference has it")
            continue
        for i, (want, obj) in enumerate(zip(ref["iou_scores"], case["objects"], strict=False)):
            got = obj["iou_scores"]
            diffs = [abs(a - b) for a, b in zip(got, want, strict=True)]
            k = max(range(len(diffs)), key=diffs.__getitem__)
            if diffs[k] > tolerance:
                who = f" object {i}" if len(ref["iou_scores"]) > 1 else ""
                failures.append(f"{ref['name']}{who}: mask {k} predicted IoU {got[k]:.3f}, reference "
                                f"{want[k]:.3f} (off by {diffs[k]:.3f} > {tolerance})")
    return failures


def plausibility(cases: list[dict[str, Any]]) -> list[str]:
    """Without ground truth: each prompt point lies in its object's chosen mask; the box case's
    mask lies inside the box and fills a large part of it."""
    failures = []
    for case in cases:
        for i, obj in enumerate(case["objects"]):
            if obj.get("points_inside") is False:
                failures.append(f"{case['name']}: a prompt point of object {i} lies outside its mask")
            if "box_inside" in obj and obj["box_inside"] < MIN_BOX_INSIDE:
                failures.append(f"{case['name']}: only {obj['box_inside']:.0%} of the mask lies inside "
                                "the box")
            if "box_fill" in obj and obj["box_fill"] < MIN_BOX_FILL:
                failures.append(f"{case['name']}: the mask fills only {obj['box_fill']:.0%} of the box")
    return failures
