"""A random-weight model of the exact EdgeTAM architecture, laid into a hub cache.

Used by `provision verify --synthetic` (does this torch/transformers/timm/device combination run
EdgeTAM at all?) and by the tests, which serve it in place of the real checkpoint. Random weights
cannot segment: the quality gate must fail for them, and the tests check that it does.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from ..fsutil import symlink_atomic, write_atomic
from ..hub.layout import blob_name, repo_folder_name, snapshot_link

SYNTHETIC_REPO = "edgetam-provision/EdgeTAM-random"
EXPECTED_PARAMETERS = 9_120_641


def build_model_files(seed: int = 0) -> dict[str, bytes]:
    """save_pretrained output (config, weights, processor config) of a random EdgeTAM."""
    import torch
    import transformers
    from transformers import (
        EdgeTamConfig,
        EdgeTamModel,
        EdgeTamVisionConfig,
        Sam2Processor,
        TimmWrapperConfig,
    )

    # transformers 4.57 has only the fast image processor; later releases have the plain one too
    image_processor = next(p for p in (getattr(transformers, "Sam2ImageProcessor", None),
                                       getattr(transformers, "Sam2ImageProcessorFast", None))
                           if p is not None)

    config = EdgeTamConfig(vision_config=EdgeTamVisionConfig(backbone_config=TimmWrapperConfig(
        architecture="repvit_m1.dist_in1k",
        model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})))
    torch.manual_seed(seed)
    model = EdgeTamModel(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        Sam2Processor(image_processor=image_processor()).save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def install_into_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> str:
    """Lay `files` into the cache as huggingface_hub would; returns the (synthetic) commit."""
    digest = hashlib.sha1(repo_id.encode())
    for name in sorted(files):
        digest.update(name.encode() + hashlib.sha256(files[name]).digest())
    commit = digest.hexdigest()
    repo = cache / repo_folder_name(repo_id)
    for name, data in files.items():
        blob = blob_name(data, lfs=name.endswith(".safetensors"))
        if not (repo / "blobs" / blob).is_file():
            write_atomic(repo / "blobs" / blob, data)
        symlink_atomic(snapshot_link(name, blob), repo / "snapshots" / commit / name)
    write_atomic(repo / "refs" / "main", commit)
    return commit
