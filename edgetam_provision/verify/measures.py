"""What the worker (`segment`) measures of each prompt case, typed until it leaves as JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from .run import Case


@dataclass(frozen=True)
class Placement:
    """Where a chosen mask lies relative to its prompts: whether the points are inside it; the
    share of it inside the box and the share of the box it fills (None: no such prompt)."""

    points_inside: bool | None = None
    box_inside: float | None = None
    box_fill: float | None = None


@dataclass(frozen=True)
class ObjectResult:
    """One object of a case: its three scores, the chosen mask's index, area and placement, and
    (with ground truth) the IoU of the chosen mask and of the best of the three."""

    iou_scores: list[float]
    best: int
    area: int
    area_fraction: float
    placement: Placement
    gt_iou: float | None = None
    gt_iou_best: float | None = None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"iou_scores": self.iou_scores, "best": self.best, "area": self.area,
                                "area_fraction": self.area_fraction}
        d.update((k, v) for k, v in asdict(self.placement).items() if v is not None)
        if self.gt_iou is not None:
            d.update(gt_iou=self.gt_iou, gt_iou_best=self.gt_iou_best)
        return d


@dataclass(frozen=True)
class CaseResult:
    """One prompt case: each object's masks, the warm latencies (ms) and where its overlay went."""

    case: Case
    objects: tuple[ObjectResult, ...]
    latencies: tuple[float, ...] = ()
    overlay: Path | None = None

    @property
    def latency_ms(self) -> float:
        return statistics.median(self.latencies)

    def to_dict(self) -> dict[str, object]:
        c = self.case
        d: dict[str, object] = {"name": c.name, "objects": [o.to_dict() for o in self.objects],
                                "prompts": {"points": c.points, "labels": c.labels, "box": c.box}}
        if self.latencies:
            d.update(latency_ms=self.latency_ms, latency_min_ms=min(self.latencies),
                     latency_max_ms=max(self.latencies))
        if self.overlay is not None:
            d["overlay"] = str(self.overlay)
        return d
