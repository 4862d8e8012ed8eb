"""`provision verify`: prove the install works (EdgeTAM runs, offline)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..console import StderrProgress
from ..errors import ProvisionError, UsageError
from . import render
from .app import CONTEXT, Result, cache_folder, cli, command, shown
from .hints import with_options

if TYPE_CHECKING:
    from ..verify.report import VerifyReport


def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n:
        raise UsageError(f"{what} must be {n} comma-separated numbers, got {text!r}",
                         "e.g. --point 500,375 or --box 75,275,1725,850")
    return vals


@cli.command(context_settings=CONTEXT)
@click.option("--device", type=click.Choice(["auto", "mps", "cuda", "cpu"]), default="auto",
              show_default=True, help="auto prefers MPS, then CUDA, then CPU.")
@click.option("--image", metavar="PATH|scene",
              help="Verify on this picture (the built-in prompts are scaled to it) [default: the truck "
              "photo of the reference run]; 'scene': the built-in scene with ground-truth masks.")
@click.option("--point", "points", multiple=True, metavar="X,Y", help="Prompt point (repeatable).")
@click.option("--box", metavar="X0,Y0,X1,Y1", help="Prompt box.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("verify_output"),
              show_default=True, help="Folder for the overlay PNGs.")
@click.option("--min-iou", type=float, default=0.5, show_default=True,
              help="With --image scene: IoU with ground truth the best of each prompt's three masks must "
              "reach.")
@click.option("--no-quality-gate", "no_gate", is_flag=True, help="Report the scores, judge only that "
              "the outputs are valid (the real checkpoint is otherwise compared with the reference run).")
@click.option("--runs", type=click.IntRange(1, 100), default=None,
              help="Warm repetitions per case; the median is reported [default: 3, on CUDA 10].")
@click.option("--repo", default=None, metavar="REPO[@REV]",
              help="Model repo to verify [default: yonigozlan/EdgeTAM-hf].")
@click.option("--synthetic", is_flag=True,
              help="Self-test with random weights of the exact architecture; needs no download.")
@click.option("--or-synthetic", is_flag=True,
              help="Run the self-test instead when the model is not cached (used by make setup).")
@click.option("--eager", is_flag=True, help="Plain model: no folded backbone, no CUDA graphs (both are "
              "used only when they match the plain result).")
@command(failed=render.failed_verify)
def verify(cache_dir: Path | None, progress: StderrProgress, debug: bool, device: str, image: str | None,
           points: tuple[str, ...], box: str | None, out: Path, min_iou: float, no_gate: bool,
           runs: int | None,
           repo: str | None, synthetic: bool, or_synthetic: bool, eager: bool) -> Result:
    """Prove the install works: EdgeTAM segments the user's four test cases, offline.

    Loads the model from the local cache only (a fresh process with HF_HUB_OFFLINE=1), encodes the
    truck photo of the reference run once and runs one point, two points, a box and two objects on
    it; reports timings and predicted IoU scores beside the reference run's, and writes one overlay
    PNG per case. The real checkpoint passes when its scores match the reference within 0.05 and
    its masks lie where the prompts are.

    Example: provision verify --device cpu --json
    """
    from ..repos import EDGETAM_REPO, RepoSpec
    from ..verify.report import VerifyReport
    from ..verify.run import VerifyRequest, verify_model

    spec = RepoSpec.parse(repo or EDGETAM_REPO)
    req = VerifyRequest(cache=str(cache_folder(cache_dir)), repo_id=spec.repo_id, revision=spec.revision,
                        device=device, image=image, quality_gate=not no_gate,
                        points=[_floats(p, 2, "--point") for p in points] or None,
                        box=_floats(box, 4, "--box") if box else None, out=str(out), min_iou=min_iou,
                        runs=runs, synthetic=synthetic, accelerate=not eager, debug=debug)
    try:
        report = verify_model(req, or_synthetic, progress)
    except ProvisionError as err:  # a failed verdict carries its report, and the report its note
        if isinstance(err.result, VerifyReport):
            err.result = _said(err.result)
        raise
    return shown(_said(report), render.verify)


def _said(report: VerifyReport) -> VerifyReport:
    """The report as the CLI says it: its note (how to get the weights) names the commands."""
    return replace(report, note=with_options(report.note))
