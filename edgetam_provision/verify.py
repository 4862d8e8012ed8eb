"""`provision verify`: prove the install works with an offline EdgeTAM segmentation.

This side stays light (no torch): it plans the cases, starts the fresh ``verify_worker`` process
with ``HF_HUB_OFFLINE=1`` in force before huggingface_hub is imported there (the segmentation
itself is `segment`), and judges the report that comes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import EnvironmentProblem, ModelMissingError, ProvisionError, UsageError, VerificationFailed
from .hfcache import EDGETAM_REPO, resolve_commit

TEST_IMAGES = Path(__file__).resolve().parent.parent / "test_images"
WORKER = "edgetam_provision.verify_worker"
Progress = Callable[[str], None]
@dataclass(frozen=True)
class Case:
    """One prompt set: points (per object) with labels, or a box; optional ground-truth masks."""

    name: str
    points: list[list[list[float]]] | None = None
    labels: list[list[int]] | None = None
    box: list[float] | None = None
    truth: list[str] = field(default_factory=list)

    @property
    def objects(self) -> int:
        return len(self.points) if self.points else 1


@dataclass(frozen=True)
class VerifyRequest:
    cache: str
    repo_id: str = EDGETAM_REPO
    revision: str | None = None
    device: str = "auto"
    image: str | None = None
    points: list[list[float]] | None = None
    box: list[float] | None = None
    out: str | None = None
    min_iou: float = 0.5
    runs: int | None = None  # None: 3, or 10 on CUDA
    synthetic: bool = False
    accelerate: bool = True
    backbone_cache: str | None = None  # where transformers < 5.24 finds the timm config (default: cache)
    debug: bool = False  # the worker prints tracebacks of unforeseen failures

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def default_cases() -> tuple[Path, list[Case]]:
    spec = json.loads((TEST_IMAGES / "cases.json").read_text())
    return TEST_IMAGES / spec["image"], [Case(**c) for c in spec["cases"]]


def plan_cases(req: VerifyRequest) -> tuple[Path, list[Case], Path | None]:
    """The image, its prompt cases, and the folder holding ground truth (None: no truth)."""
    if not (TEST_IMAGES / "cases.json").is_file() and not req.image:
        raise UsageError("the built-in test image is not installed", "pass --image PATH")
    image, cases = default_cases() if (TEST_IMAGES / "cases.json").is_file() else (None, [])
    truth_dir: Path | None = TEST_IMAGES
    if req.image:
        image, truth_dir = Path(req.image), None
        if not image.is_file():
            raise UsageError(f"no such image: {image}", "pass a JPEG or PNG file to --image")
        cases = [Case(c.name, c.points, c.labels, c.box) for c in cases]
    if req.points or req.box:
        truth_dir = None
        cases = []
        if req.points:
            cases.append(Case("points", [req.points], [[1] * len(req.points)]))
        if req.box:
            cases.append(Case("box", box=req.box))
    return image, cases, truth_dir


def apply_quality_gate(report_checks: list[dict[str, Any]], min_iou: float) -> None:
    """Fill in the quality checks: ground-truth IoU must reach `min_iou`."""
    for c in report_checks:
        if c["kind"] == "quality":
            c["ok"] = c["gt_iou"] >= min_iou
            c["detail"] = (f"{c['case']}: IoU with ground truth {c['gt_iou']:.3f} "
                           f"{'>=' if c['ok'] else '<'} {min_iou}")


def finalize(report: dict[str, Any]) -> dict[str, Any]:
    """Apply the quality gate, drop in-memory masks; the verdict goes into ``passed``."""
    for r in report["cases"]:
        r.pop("_masks", None)
    if report["quality_gate"]["applied"]:
        apply_quality_gate(report["checks"], report["quality_gate"]["min_iou"])
    failures = [c for c in report["checks"]
                if c["ok"] is False and (c["kind"] != "quality" or report["quality_gate"]["applied"])]
    report["passed"] = not failures
    report["failures"] = [c["detail"] for c in failures]
    report["checks"] = [c for c in report["checks"] if c["ok"] is not None]
    return report


def failure_error(report: dict[str, Any]) -> VerificationFailed:
    """The one-line error for a failed verdict."""
    first = report["failures"][0] if report["failures"] else "unknown failure"
    kinds = {c["kind"] for c in report["checks"] if c["ok"] is False}
    hint = ("the weights do not segment this image: is this the real checkpoint? "
            "(--min-iou 0 skips the quality gate)" if kinds == {"quality"} else
            "the model ran but produced invalid output: check torch/transformers versions "
            "(`provision doctor`)")
    return VerificationFailed(f"verification failed: {first}", hint)


def ensure_env_offline() -> None:
    """Make this process offline for huggingface_hub/transformers; must run before they import."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def run_in_fresh_process(req: VerifyRequest) -> dict[str, Any]:
    """Run the verification in a fresh, offline Python process; return its report."""
    from . import errors

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", WORKER], input=req.to_json(), stdout=subprocess.PIPE,
                              text=True, env=env)
    except KeyboardInterrupt:
        raise errors.Interrupted("interrupted", "nothing was written but the overlays of finished "
                                 "cases; run it again") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise EnvironmentProblem(f"the verification process died (exit {proc.returncode})",
                                 "run `provision --debug verify` and see the messages above")
    msg = json.loads(lines[-1])
    if not msg["ok"]:
        cls = getattr(errors, msg.get("class", ""), ProvisionError)
        raise cls(msg["message"], msg.get("hint", ""))
    return msg["report"]


def verify_install(req: VerifyRequest, or_synthetic: bool = False,
                   progress: Progress = lambda _m: None) -> dict[str, Any]:
    """Verify the cached model (or, with `or_synthetic`, the self-test when it is not cached).

    Returns ``{"report", "note", "ok"}``; a failed verdict adds the error keys and exit code.
    """
    note = ""
    if or_synthetic and not req.synthetic:
        try:
            resolve_commit(Path(req.cache), req.repo_id, req.revision)
        except ModelMissingError:
            req = replace(req, synthetic=True)
            note = (f"{req.repo_id} is not in {req.cache}: ran the self-test with random weights. "
                    "Get the weights with `provision fetch --host HOST` or `provision restore "
                    "model_backups/`, then run `provision verify`.")
            progress(f"note: {note}")
    report = run_in_fresh_process(req)
    data: dict[str, Any] = {"report": report, "note": note, "ok": report["passed"]}
    if not report["passed"]:
        data.update(failure_error(report).to_dict())
    return data
