"""Faster EdgeTAM inference that is checked against the plain model before it is trusted.

- `reparameterize`: timm's own inference transform for RepViT (batch norms folded into the
  convolutions, parallel branches merged): ~16% less encoder time on CPU, fewer kernels on GPU.
- `cuda_graph`: on an H100 the image encoder (~17 GFLOP) runs in ~12 ms eager but needs ~0.3 ms of
  compute: the time goes to kernel launches. Capturing it (and each prompt decode) as a CUDA graph
  removes them.
Each is compared with the unchanged computation; on any error or a difference above `TOLERANCE`
(relative to the output's scale) the plain path is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import Tensor

T = TypeVar("T")
Info = dict[str, Any]  # how a step runs (mode, why, how close): JSON in the verify report

TOLERANCE = 1e-3


def _tensors(out: object) -> list[Tensor]:
    """The tensors in a model output (tensor, list/tuple of tensors, or ModelOutput)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if hasattr(out, "values"):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def relative_diff(a: object, b: object) -> float:
    """max |a - b| over all output tensors, relative to max |b| (inf when shapes differ)."""
    scale = max((float(t.float().abs().max()) for t in _tensors(b)), default=0.0)
    return max_abs_diff(a, b) / scale if scale else max_abs_diff(a, b)


def reparameterize(model: object) -> tuple[Callable[[], None], Info]:
    """Fold the RepViT backbone (`model.vision_encoder.backbone.timm_model`) for inference; returns
    (undo, info). No-op if there is none or timm cannot."""
    wrapper = getattr(getattr(model, "vision_encoder", None), "backbone", None)
    original = getattr(wrapper, "timm_model", None)
    if wrapper is None or original is None:
        return lambda: None, {"mode": "plain", "why": "no timm backbone"}
    try:
        from timm.utils.model import reparameterize_model

        wrapper.timm_model = reparameterize_model(original)  # a folded copy; the original is kept
    except Exception as exc:
        return lambda: None, {"mode": "plain", "why": f"{type(exc).__name__}: {str(exc)[:120]}"}

    def undo() -> None:
        wrapper.timm_model = original

    return undo, {"mode": "reparameterized"}


def max_abs_diff(a: object, b: object) -> float:
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb, strict=True)):
        return float("inf")
    return max((float((x.float() - y.float()).abs().max()) for x, y in zip(ta, tb, strict=True)),
               default=0.0)


def cuda_graph(fn: Callable[..., T], *example: Tensor) -> tuple[Callable[..., T], Info]:
    """Capture `fn(*example)` as a CUDA graph; returns (callable, info). Falls back to `fn`.

    The callable copies its tensor arguments into the captured inputs, replays, and returns the
    captured outputs (valid until the next call).
    """
    import torch

    try:
        static = [x.clone() for x in example]
        eager = fn(*example)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = fn(*static)

        def replay(*args: Tensor) -> T:
            for dst, src in zip(static, args, strict=True):
                dst.copy_(src, non_blocking=True)
            graph.replay()
            return captured

        diff = max_abs_diff(replay(*example), eager)
        if diff > TOLERANCE:
            return fn, {"mode": "eager", "why": f"graph output differs by {diff:.2e}"}
        return replay, {"mode": "cuda-graph", "max_abs_diff": diff}
    except Exception as exc:  # any capture failure means: stay eager
        with contextlib.suppress(Exception):  # without CUDA, even this raises
            torch.cuda.synchronize()
        return fn, {"mode": "eager", "why": f"{type(exc).__name__}: {str(exc)[:160]}"}
