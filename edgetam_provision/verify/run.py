"""`provision verify`: prove the install works with an offline EdgeTAM segmentation.

This side stays light (no torch): it plans the cases, starts the fresh `worker` process
with ``HF_HUB_OFFLINE=1`` in force before huggingface_hub is imported there (the segmentation
itself is `segment`), and judges what it measured (`report`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..console import ProgressFn, no_progress
from ..errors import EnvironmentProblem, Interrupted, ModelMissingError, UsageError, error_from_dict
from ..hub.cache import resolve_commit
from ..hub.layout import repo_folder_name
from ..repos import EDGETAM_REPO
from .report import VerifyReport, failed_verdict, judge

WORKER = "edgetam_provision.verify.worker"
BUILTIN_SCENE = "scene"  # the picture named "scene": the generated one with ground-truth masks
REFERENCE_SIZE = (1800, 1200)  # the truck photo the built-in prompts were made for


def assets() -> Path:
    """The pictures, masks and prompt sets shipped inside the package."""
    return Path(str(resources.files("edgetam_provision.verify") / "assets"))


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
    image: str | None = None  # None: the truck photo of the reference run; "scene": the generated one
    points: list[list[float]] | None = None
    box: list[float] | None = None
    out: str | None = None
    min_iou: float = 0.5
    quality_gate: bool = True  # judge the real checkpoint's scores (reference run / ground truth)
    runs: int | None = None  # None: 3, or 10 on CUDA
    synthetic: bool = False
    accelerate: bool = True
    backbone_cache: str | None = None  # where transformers < 5.24 finds the timm config (default: cache)
    debug: bool = False  # the worker prints tracebacks of unforeseen failures

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class CasePlan:
    """What a verify run segments, and what its scores are judged against."""

    image: Path
    cases: list[Case]
    truth_dir: Path | None  # ground-truth masks (the built-in scene)
    yardstick: str  # reference | ground truth | none
    prompts: str  # where the prompts come from, said in the report


def _cases(items: list[dict[str, Any]]) -> list[Case]:
    keys = ("name", "points", "labels", "box", "truth")
    return [Case(**{k: v for k, v in c.items() if k in keys}) for c in items]


def plan_cases(req: VerifyRequest) -> CasePlan:
    """The image, its prompt cases and their yardstick; every input checked before heavy imports."""
    from .reference import load_reference

    ref = load_reference()
    if req.image == BUILTIN_SCENE:
        spec = json.loads((assets() / "scene_cases.json").read_text())
        plan = CasePlan(assets() / spec["image"], _cases(spec["cases"]), assets(), "ground truth",
                        "built-in")
    elif req.image is None:
        plan = CasePlan(assets() / ref["image"], _cases(ref["cases"]), None, "reference", "built-in")
    else:
        plan = CasePlan(Path(req.image), _cases(ref["cases"]), None, "none", "")
    size = image_size(plan.image)
    if req.points or req.box:
        cases = []
        if req.points:
            cases.append(Case("points", [req.points], [[1] * len(req.points)]))
        if req.box:
            cases.append(Case("box", box=req.box))
        plan = CasePlan(plan.image, cases, None, "none", "given")
    elif req.image not in (None, BUILTIN_SCENE):
        sx, sy = size[0] / REFERENCE_SIZE[0], size[1] / REFERENCE_SIZE[1]
        scaled = [Case(c.name, [[[x * sx, y * sy] for x, y in obj] for obj in c.points] if c.points else None,
                       c.labels, [v * (sx, sy)[k % 2] for k, v in enumerate(c.box)] if c.box else None)
                  for c in plan.cases]
        ref_w, ref_h = REFERENCE_SIZE
        plan = CasePlan(plan.image, scaled, None, "none",
                        f"built-in, scaled from {ref_w}x{ref_h} to {size[0]}x{size[1]}")
    for case in plan.cases:
        check_prompts(case, size)
    return plan


def image_size(path: Path) -> tuple[int, int]:
    """Width and height of a readable picture; a usage error naming the problem otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UsageError(f"no such image: {path}", "pass a JPEG or PNG file as the picture")
    try:
        with Image.open(path) as im:
            im.load()  # decodes it all: a truncated file fails here, not after the model loaded
            width, height = im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UsageError(f"{path} is not a readable picture ({type(exc).__name__}: {str(exc)[:120]})",
                         "pass a JPEG or PNG file as the picture") from None
    if min(width, height) < 16:
        raise UsageError(f"{path} is only {width}x{height} pixels", "use a picture of at least 16x16")
    return int(width), int(height)


def check_prompts(case: Case, size: tuple[int, int]) -> None:
    """Finite numbers, inside the image; a box with x0 < x1 and y0 < y1."""
    w, h = size
    for obj in case.points or []:
        for x, y in obj:
            if not (math.isfinite(x) and math.isfinite(y) and 0 <= x < w and 0 <= y < h):
                raise UsageError(f"point {x:g},{y:g} is not inside the {w}x{h} image",
                                 f"give X in 0..{w - 1} and Y in 0..{h - 1}")
    if case.box:
        x0, y0, x1, y1 = case.box
        if not all(math.isfinite(v) for v in case.box):
            raise UsageError(f"box {case.box} has a number that is not finite",
                             "give four numbers, e.g. 75,275,1725,850")
        if not (x0 < x1 and y0 < y1):
            raise UsageError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is not ordered",
                             "give X0,Y0,X1,Y1 with X0 < X1 and Y0 < Y1 (top-left, then bottom-right)")
        if not (x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h):
            raise UsageError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is not inside the {w}x{h} image",
                             f"keep it within 0,0,{w},{h}")


def ensure_env_offline() -> None:
    """Make this process offline for huggingface_hub/transformers; must run before they import."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def run_in_fresh_process(req: VerifyRequest) -> dict[str, Any]:
    """Run the segmentation in a fresh, offline Python process; return what it measured (JSON)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    interrupted = Interrupted("interrupted", "nothing was written but the overlays of finished cases; "
                                             "run it again")
    try:
        proc = subprocess.run([sys.executable, "-m", WORKER], input=req.to_json(), stdout=subprocess.PIPE,
                              text=True, env=env)
    except KeyboardInterrupt:
        raise interrupted from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == -signal.SIGINT:
        raise interrupted
    if proc.returncode != 0 or not lines:
        raise EnvironmentProblem(f"the verification process died (exit {proc.returncode})",
                                 "run it again with tracebacks shown and see the messages above")
    msg = json.loads(lines[-1])
    if not msg["ok"]:
        raise error_from_dict(msg)
    measured: dict[str, Any] = msg["report"]
    return measured


EDGETAM_TYPES = ("edgetam",)  # the model_type of EdgeTAM checkpoints in transformers


def check_is_edgetam(cache: Path, repo_id: str, commit: str) -> None:
    """A cached repo that is not an EdgeTAM checkpoint is said before anything loads."""
    config = cache / repo_folder_name(repo_id) / "snapshots" / commit / "config.json"
    try:
        kind = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return  # no readable config: the worker says what is missing
    if kind not in EDGETAM_TYPES:
        raise UsageError(f"{repo_id} is a {kind or 'model of no stated type'} checkpoint, not EdgeTAM",
                         "verify runs EdgeTAM: leave the repo out (yonigozlan/EdgeTAM-hf), or name an "
                         "EdgeTAM checkpoint")


def verify_model(req: VerifyRequest, or_synthetic: bool = False,
                 progress: ProgressFn = no_progress) -> VerifyReport:
    """Verify the cached model (or, with `or_synthetic`, the self-test when it is not cached).

    Returns the passing report; a failed verdict raises `FailedVerdict`, which carries it.
    """
    note = ""
    if or_synthetic and not req.synthetic:
        try:
            resolve_commit(Path(req.cache), req.repo_id, req.revision)
        except ModelMissingError:
            req = replace(req, synthetic=True)
            note = (f"{req.repo_id} is not in {req.cache}: ran the self-test with random weights. "
                    "Get the weights (fetch them on a host you can ssh to, or restore them from backups), "
                    "then run `provision verify`.")
            progress(f"note: {note}")
    plan_cases(req)  # every input checked here, in well under a second, before the model loads
    if not req.synthetic:
        try:
            commit = resolve_commit(Path(req.cache), req.repo_id, req.revision)
        except ModelMissingError as err:
            raise ModelMissingError(err.message, "get the weights: fetch them with a restore, on a host "
                                    "you can ssh to (or restore them from backups); a synthetic verify "
                                    "checks this machine without them",
                                    path=err.path, repo=err.repo, revision=err.revision) from None
        check_is_edgetam(Path(req.cache), req.repo_id, commit)
    report = judge(run_in_fresh_process(req), note)
    if not report.passed:
        raise failed_verdict(report)
    return report

