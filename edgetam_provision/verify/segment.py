"""The EdgeTAM segmentation itself, run inside the fresh offline `worker` process.

Loads `EdgeTamModel` + `Sam2Processor` pinned to the cached commit, encodes the image once, runs
every prompt case on the shared embedding (folded backbone and, on CUDA, CUDA graphs when they
give the plain model's result), times it all, describes the masks and writes one overlay PNG per
case. The verdict on the numbers is `verify.report.judge`'s, in the parent process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..console import ProgressFn
from ..errors import EnvironmentProblem, ModelMissingError
from ..hub.cache import resolve_commit
from ..hub.layout import repo_folder_name
from ..repos import BACKBONE_REPO
from .measures import CaseResult, ObjectResult, Placement
from .report import Check
from .run import Case, VerifyRequest, plan_cases
from .runtime import (
    UPGRADE,
    choose_device,
    library_verdict,
    library_versions,
    needs_backbone_config,
    synchronize,
)

if TYPE_CHECKING:  # verify's start-up imports none of these; `run` imports them when it loads
    import numpy as np
    from numpy.typing import NDArray
    from PIL.Image import Image as Picture
    from torch import Tensor
    from transformers import EdgeTamModel, Sam2Processor

    from .accelerate import Info

    Mask = NDArray[np.bool_]  # one object's mask at image size: (H, W) booleans
    Decoded = tuple["MaskOutput", Tensor]  # model output, each object's best mask (objects, H, W)
    Steps = tuple[Callable[[Tensor], list[Tensor]], dict[str, Callable[[], Decoded]], Info]

T = TypeVar("T")


class MaskOutput(Protocol):
    """What verify reads of `EdgeTamImageSegmentationOutput` (whose forward always sets both)."""

    @property
    def iou_scores(self) -> Tensor: ...  # (1, objects, 3)
    @property
    def pred_masks(self) -> Tensor: ...  # (1, objects, 3, h, w) low-resolution logits


def check_environment(versions: dict[str, str], cache: Path) -> None:
    """Refuse library versions that cannot run EdgeTAM and missing backbone configs, saying what to do."""
    for name in ("torch", "transformers", "timm"):
        verdict = library_verdict(name, versions.get(name, "missing"))
        if not verdict.ok:
            raise EnvironmentProblem(f"{name} {verdict.detail}", verdict.fix)
    tv = versions["transformers"]
    if needs_backbone_config(tv):
        try:
            commit = resolve_commit(cache, BACKBONE_REPO, None)
        except ModelMissingError:
            commit = None
        if commit is None or not (cache / repo_folder_name(BACKBONE_REPO) / "snapshots" / commit
                                  / "config.json").exists():
            raise ModelMissingError(
                f"transformers {tv} needs {BACKBONE_REPO}/config.json in the cache, even offline",
                f"provision it too: fetch them on a host you can ssh to, which brings both repos, or "
                f"`provision restore` a backup of {BACKBONE_REPO}; or {UPGRADE}")


def run(req: VerifyRequest, progress: ProgressFn) -> dict[str, Any]:
    """Load, segment, time and check the outputs; returns what it measured, as JSON.

    Long on purpose: one timed sequence (imports, load, first inference, accelerated steps, warm
    runs), read top to bottom; each timer's start and stop stay in sight of each other.
    """
    t_start = time.perf_counter()
    cache = Path(req.cache)
    plan = plan_cases(req)
    image_path, cases, truth_dir = plan.image, plan.cases, plan.truth_dir
    versions = library_versions()
    check_environment(versions, Path(req.backbone_cache or req.cache))
    commit = resolve_commit(cache, req.repo_id, req.revision)

    t0 = time.perf_counter()
    import numpy  # noqa: F401  (timed here with the rest; `_describe` and the overlays use it)
    import torch
    from PIL import Image
    from transformers import EdgeTamModel, Sam2Processor

    import_s = time.perf_counter() - t0

    device = choose_device(req.device, torch)
    runs = req.runs or (10 if device == "cuda" else 3)
    progress(f"loading {req.repo_id}@{commit[:12]} offline on {device}…")
    t0 = time.perf_counter()
    try:
        # ignore: transformers wraps PreTrainedModel.to with functools.wraps(torch.nn.Module.to), and
        # typeshed's _Wrapped has no __get__, so mypy reads the bound method as unbound
        model: EdgeTamModel = EdgeTamModel.from_pretrained(
            req.repo_id, revision=commit, cache_dir=cache,
            local_files_only=True).to(device).eval()  # type: ignore[arg-type]
        processor = Sam2Processor.from_pretrained(req.repo_id, revision=commit, cache_dir=cache,
                                                  local_files_only=True)
    except OSError as exc:
        raise _missing_file_error(exc, req.repo_id) from None
    if device == "cpu":  # ~15% faster convolutions on CPU; slower on the H100 (measured)
        model.vision_encoder.to(memory_format=torch.channels_last)
    synchronize(torch, device)
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())

    image = Image.open(image_path).convert("RGB")
    checks: list[Check] = []
    results: list[CaseResult] = []
    masks: list[list[Mask]] = []  # per case, each object's chosen mask (H, W booleans), for the overlays
    with torch.inference_mode():
        t0 = time.perf_counter()
        inputs = processor(images=image, return_tensors="pt")
        pixel_values: Tensor = inputs["pixel_values"].to(device)
        if device == "cpu":
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        sizes: Tensor = inputs["original_sizes"]
        embeddings = model.get_image_embeddings(pixel_values)
        first = _decode(model, processor, embeddings, sizes, cases[0], device)
        synchronize(torch, device)
        first_s = time.perf_counter() - t0
        del first

        decoders, accel, encode_times = _fast_steps(
            model, processor, pixel_values, embeddings, sizes, cases, device, req.accelerate, runs, torch)
        encode_ms = statistics.median(encode_times)
        for case in cases:
            step = decoders[case.name]
            latency, out = _latencies(step, runs, torch, device)
            every_mask = (lambda o: processor.post_process_masks(o.pred_masks.cpu(), sizes)[0]) \
                if truth_dir is not None else None
            described, chosen = _describe(case, out, truth_dir, checks, every_mask)
            results.append(replace(described, latencies=tuple(latency)))
            masks.append(chosen)
    overlays = _write_overlays(image, cases, masks, Path(req.out)) if req.out else []
    results[:len(overlays)] = [replace(r, overlay=path) for r, path in zip(results, overlays, strict=False)]
    return {
        "device": device, "versions": versions, "repo_id": req.repo_id, "commit": commit,
        "synthetic": req.synthetic, "parameters": params, "image": str(image_path),
        "yardstick": plan.yardstick, "prompts": plan.prompts,
        "import_s": round(import_s, 3), "load_s": round(load_s, 3), "first_inference_s": round(first_s, 3),
        "encode_ms": round(encode_ms, 2), "cases": [r.to_dict() for r in results], "acceleration": accel,
        "four_cases_warm_ms": round(encode_ms + sum(r.latency_ms for r in results), 2),
        "quality_gate": {"enabled": req.quality_gate, "min_iou": req.min_iou},
        "checks": [asdict(c) for c in checks],
        "total_s": round(time.perf_counter() - t_start, 3),
    }


def _missing_file_error(exc: OSError, repo_id: str) -> ModelMissingError:
    text = str(exc)
    if "repvit" in text.lower():
        return ModelMissingError(f"{BACKBONE_REPO}'s config is needed offline but not cached",
                                 "`provision fetch` gets both repos; or `provision restore` its backup")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return ModelMissingError(f"{repo_id} cannot be loaded offline: {first[:200]}",
                             "the cached snapshot is incomplete: restore or fetch it again")


def _prompts(processor: Sam2Processor, sizes: Tensor, case: Case, device: str) -> dict[str, Tensor]:
    """The case's prompts as model tensors (points and labels, or a box) on `device`."""
    prompts = processor(original_sizes=sizes, return_tensors="pt",
                        input_points=[case.points] if case.points else None,
                        input_labels=[case.labels] if case.points and case.labels is not None else None,
                        input_boxes=[[case.box]] if case.box else None)
    return {k: v.to(device) for k, v in sorted(prompts.items())
            if k in ("input_points", "input_labels", "input_boxes")}


def best_masks(processor: Sam2Processor, out: MaskOutput, sizes: Tensor) -> Tensor:
    """Upscale only each object's best-scoring mask to the image size: (objects, H, W) booleans."""
    best = out.iou_scores.argmax(dim=-1)  # (1, objects)
    idx = best[..., None, None, None].expand(-1, -1, 1, *out.pred_masks.shape[-2:])
    low = out.pred_masks.gather(2, idx)  # (1, objects, 1, h, w)
    upscaled: Tensor = processor.post_process_masks(low, sizes)[0]
    return upscaled[:, 0]


def _decode(model: EdgeTamModel, processor: Sam2Processor, embeddings: list[Tensor], sizes: Tensor,
            case: Case, device: str) -> Decoded:
    """Eager: prompts -> masks on the image embedding; returns (model output, best full-size masks)."""
    out: MaskOutput = model(image_embeddings=embeddings, multimask_output=True,
                            **_prompts(processor, sizes, case, device))
    return out, best_masks(processor, out, sizes)


def _fast_steps(model: EdgeTamModel, processor: Sam2Processor, pixel_values: Tensor, embeddings: list[Tensor],
                sizes: Tensor, cases: list[Case], device: str, accelerate: bool, runs: int,
                torch: ModuleType) -> tuple[dict[str, Callable[[], Decoded]], Info, list[float]]:
    """Encoder + decode steps, folded (and graphed on CUDA) when that gives the same embedding.

    The timed encoder runs double as the check: their output is compared with the plain
    model's first embedding; on a mismatch everything is rebuilt plain and timed again.
    """
    from .accelerate import TOLERANCE, relative_diff, reparameterize

    plain: Info = {"mode": "plain"}  # how the backbone runs: plain, or folded (how close)
    undo, folded = reparameterize(model) if accelerate else (lambda: None, plain)
    encode, decoders, accel = _build_steps(model, processor, pixel_values, embeddings, sizes, cases,
                                           device, accelerate and device == "cuda")
    times, out = _latencies(lambda: encode(pixel_values), runs, torch, device)
    if folded["mode"] == "reparameterized":
        folded["relative_diff"] = relative_diff(out, embeddings)
        if folded["relative_diff"] > TOLERANCE:
            undo()
            folded = {"mode": "plain", "why": f"folded encoder differs by {folded['relative_diff']:.1e}"}
            encode, decoders, accel = _build_steps(model, processor, pixel_values, embeddings, sizes,
                                                   cases, device, accelerate and device == "cuda")
            times, _ = _latencies(lambda: encode(pixel_values), runs, torch, device)
    accel["backbone"] = folded
    return decoders, accel, times


def _build_steps(model: EdgeTamModel, processor: Sam2Processor, pixel_values: Tensor,
                 embeddings: list[Tensor], sizes: Tensor, cases: list[Case], device: str,
                 graphs: bool) -> Steps:
    """The encoder and one decode step per case; CUDA graphs where asked and proven equal."""
    from .accelerate import cuda_graph

    def encode(x: Tensor) -> list[Tensor]:
        return model.get_image_embeddings(x)

    accel: Info = {"cuda_graphs": graphs}
    if graphs:  # the decoders then read the graph's own (static) embedding tensors
        encode, accel["encoder"] = cuda_graph(encode, pixel_values)
        embeddings = encode(pixel_values)
    steps: dict[str, Callable[[], Decoded]] = {}
    for case in cases:
        keys = list(_prompts(processor, sizes, case, device))

        def decode(*tensors: Tensor, keys: list[str] = keys) -> MaskOutput:
            out: MaskOutput = model(image_embeddings=embeddings, multimask_output=True,
                                    **dict(zip(keys, tensors, strict=True)))
            return out

        if graphs:
            example = _prompts(processor, sizes, case, device)
            decode, accel[case.name] = cuda_graph(decode, *example.values())

        def step(case: Case = case, decode: Callable[..., MaskOutput] = decode) -> Decoded:
            out = decode(*_prompts(processor, sizes, case, device).values())
            return out, best_masks(processor, out, sizes)

        steps[case.name] = step
    return encode, steps, accel


def _latencies(fn: Callable[[], T], runs: int, torch: ModuleType, device: str) -> tuple[list[float], T]:
    """Wall times in ms of `runs` synchronized calls, and the last call's result."""
    times: list[float] = []
    for _ in range(max(1, runs)):  # at least once: `result` is always bound
        t0 = time.perf_counter()
        result = fn()
        synchronize(torch, device)
        times.append((time.perf_counter() - t0) * 1000)
    return times, result


def _describe(case: Case, decoded: Decoded, truth_dir: Path | None, checks: list[Check],
              every_mask: Callable[[MaskOutput], Tensor] | None = None) -> tuple[CaseResult, list[Mask]]:
    """Per-object scores, chosen mask, area, whether the prompts lie in it, and (with ground truth)
    the IoU of the chosen mask and of the best of the three; appends the checks it makes. Returns
    that and each object's chosen mask."""
    out, masks = decoded
    import numpy as np
    from PIL import Image

    masks = masks.cpu()

    scores = out.iou_scores.float().cpu()
    pm = out.pred_masks
    shape_ok = tuple(pm.shape[:3]) == (1, case.objects, 3) and tuple(scores.shape) == (1, case.objects, 3)
    finite = bool(pm.isfinite().all()) and bool(scores.isfinite().all())
    checks.append(Check("shape", case.name, shape_ok,
                        f"{case.name}: pred_masks {tuple(pm.shape)}, iou_scores {tuple(scores.shape)}"))
    checks.append(Check("finite", case.name, finite,
                        f"{case.name}: outputs are {'finite' if finite else 'NOT finite'}"))
    objects = []
    for i in range(case.objects):
        s = scores[0, i].tolist()
        best = int(max(range(3), key=lambda k: s[k]))
        mask = masks[i].numpy().astype(bool)
        area = int(mask.sum())
        obj = ObjectResult([round(x, 4) for x in s], best, area, round(area / mask.size, 4),
                           _placement(case, i, mask))
        checks.append(Check("non-empty", case.name, area > 0,
                            f"{case.name}: object {i} mask is {'non-empty' if area else 'EMPTY'}"))
        if truth_dir is not None and every_mask is not None and i < len(case.truth):
            truth = np.array(Image.open(truth_dir / case.truth[i]).convert("L")) > 127
            three = every_mask(out)[i].numpy().astype(bool)
            obj = replace(obj, gt_iou=round(iou(mask, truth), 4),
                          gt_iou_best=round(max(iou(m, truth) for m in three), 4))
        objects.append(obj)
    return (CaseResult(case, tuple(objects)), [masks[i].numpy().astype(bool) for i in range(len(objects))])


def _placement(case: Case, i: int, mask: Mask) -> Placement:
    """Where the chosen mask lies relative to its prompts: points inside it; share inside the box
    and share of the box it fills."""
    h, w = mask.shape
    out = Placement()
    if case.points:
        out = replace(out, points_inside=all(bool(mask[min(int(y), h - 1), min(int(x), w - 1)])
                                             for x, y in case.points[i]))
    if case.box:
        x0, y0, x1, y1 = (round(v) for v in case.box)
        inside = int(mask[max(y0, 0):y1, max(x0, 0):x1].sum())
        area = int(mask.sum())
        out = replace(out, box_inside=round(inside / area, 4) if area else 0.0,
                      box_fill=round(inside / max(1, (x1 - x0) * (y1 - y0)), 4))
    return out


def _write_overlays(image: Picture, cases: list[Case], masks: list[list[Mask]], out: Path) -> list[Path]:
    """One PNG per case: masks tinted over the image, prompts drawn. Written atomically."""
    import numpy as np
    from PIL import Image, ImageDraw

    from ..fsutil import atomic_writer

    out.mkdir(parents=True, exist_ok=True)
    colours = [(30, 144, 255), (255, 140, 0), (50, 205, 50)]
    base = np.asarray(image).astype(np.float32)
    paths = []
    for case, chosen in zip(cases, masks, strict=True):
        pic = base.copy()
        for i, mask in enumerate(chosen):
            c = np.array(colours[i % len(colours)], dtype=np.float32)
            pic[mask] = pic[mask] * 0.45 + c * 0.55
        im = Image.fromarray(pic.clip(0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for obj in case.points or []:
            for x, y in obj:
                d.ellipse((x - 14, y - 14, x + 14, y + 14), fill=(0, 255, 0),
                          outline=(255, 255, 255), width=4)
        if case.box:
            d.rectangle(case.box, outline=(0, 255, 0), width=6)
        path = out / f"{case.name.replace(' ', '_')}.png"
        with atomic_writer(path) as fh:
            im.save(fh, format="PNG", compress_level=1)  # level 6 costs 0.6 s per picture
        paths.append(path)
    return paths


def iou(a: Mask, b: Mask) -> float:
    inter = (a & b).sum()
    union = (a | b).sum()
    return float(inter / union) if union else 0.0
