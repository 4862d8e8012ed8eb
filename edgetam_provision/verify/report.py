"""A verify run's verdict: the typed report, the judging that makes it, the error a failed one is.

The worker measures (`segment`); this side judges what it measured against the yardstick (the
reference run, or the scene's ground truth) and returns a `VerifyReport`. A failed verdict is
raised as `FailedVerdict`, which carries the whole report: the CLI prints the report, then the
one-line error. One channel: no result dict with an exit code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import VerificationFailed


@dataclass(frozen=True)
class Check:
    """One judged property: ``shape``, ``finite``, ``non-empty`` (per case) or ``quality``."""

    kind: str
    case: str
    ok: bool
    detail: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        return cls(str(data["kind"]), str(data["case"]), bool(data["ok"]), str(data["detail"]))


@dataclass(frozen=True)
class VerifyReport:
    """The verdict on one verify run (`checks`, and from them `passed` and `failures`) and what
    it measured. `measured` is JSON as the worker wrote it (versions, cases, timings,
    acceleration), with the quality gate and the reference filled in; it leaves as JSON."""

    measured: Mapping[str, Any]
    checks: tuple[Check, ...]
    note: str = ""  # said beside the report (the self-test ran instead of the missing model)

    @property
    def failures(self) -> list[str]:
        return [c.detail for c in self.checks if not c.ok]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """The report object of ``verify --json`` (and of ``fetch --restore``'s ``verify``)."""
        return {**self.measured, "checks": [asdict(c) for c in self.checks], "passed": self.passed,
                "failures": self.failures}

    def to_dict(self) -> dict[str, Any]:
        """The command's result: ``{"report", "note", "ok"}``."""
        return {"report": self.to_json(), "note": self.note, "ok": self.passed}


class FailedVerdict(VerificationFailed):
    """The model ran and its outputs failed a check: carries the whole report."""

    def __init__(self, report: VerifyReport, message: str, hint: str) -> None:
        super().__init__(message, hint, result=report)
        self.report = report


def judge(measured: Mapping[str, Any], note: str = "") -> VerifyReport:
    """Apply the quality gate to the worker's measurements: the reference run's scores (the truck
    photo) or ground truth (the scene), for the real checkpoint only. The report says why when
    the gate does not apply."""
    from .reference import TOLERANCE, compare_scores, load_reference, plausibility

    yardstick = measured["yardstick"]
    gate = dict(measured["quality_gate"])
    why_not = ("random weights cannot segment (self-test)" if measured["synthetic"] else
               "disabled on request" if not gate["enabled"] else
               "no reference or ground truth for this image and these prompts"
               if yardstick == "none" else None)
    gate.update(applied=why_not is None, why_not=why_not, yardstick=yardstick)
    added: dict[str, Any] = {}
    ref = load_reference() if yardstick == "reference" else {}
    if ref:
        added["reference"] = {"source": ref["source"], "load_ms": ref["load_ms"],
                              "cases": {c["name"]: {"iou_scores": c["iou_scores"], "ms": c["ms"]}
                                        for c in ref["cases"]}}
    checks = tuple(Check.from_dict(c) for c in measured["checks"])
    if why_not is None:
        if ref:
            gate["tolerance"] = TOLERANCE
            failures = compare_scores(measured["cases"], ref) + plausibility(measured["cases"])
        else:
            failures = [f"{c['name']}: object {i}: the best of the three masks overlaps ground truth "
                        f"{o['gt_iou_best']:.3f} < {gate['min_iou']}"
                        for c in measured["cases"] for i, o in enumerate(c["objects"])
                        if "gt_iou_best" in o and o["gt_iou_best"] < gate["min_iou"]]
        checks += tuple(Check("quality", f.split(":")[0], False, f) for f in failures) or (
            Check("quality", "all", True, f"matches the {yardstick}"),)
    rest = {k: v for k, v in measured.items() if k != "checks"}
    return VerifyReport({**rest, "quality_gate": gate, **added}, checks, note)


def failed_verdict(report: VerifyReport) -> FailedVerdict:
    """The error a failed verdict raises: its first failure in one line, a hint by its kind."""
    from .reference import MEANING

    kinds = {c.kind for c in report.checks if not c.ok}
    if kinds == {"quality"} and report.measured.get("yardstick") == "reference":
        hint = f"this install does not behave like the reference run: usually {MEANING}"
    elif kinds == {"quality"}:
        hint = ("the weights do not segment this image: is this the real checkpoint? "
                "(a run without the quality gate skips the comparison)")
    else:
        hint = ("the model ran but produced invalid output: check torch/transformers versions "
                "(`provision doctor`)")
    first = report.failures[0] if report.failures else "unknown failure"
    return FailedVerdict(report, f"verification failed: {first}", hint)
