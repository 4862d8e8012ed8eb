"""Acceleration is only used when it reproduces the plain computation; otherwise plain is kept."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from edgetam_provision.verify.accelerate import cuda_graph, relative_diff, reparameterize


def test_relative_diff_measures_against_the_reference_scale():
    a = [torch.ones(4, 4), torch.full((2,), 10.0)]
    assert relative_diff(a, a) == 0.0
    b = [torch.ones(4, 4), torch.full((2,), 10.1)]
    assert relative_diff(b, a) == pytest.approx(0.01, rel=1e-3)
    assert relative_diff([torch.ones(3)], [torch.ones(4)]) == float("inf")


@pytest.mark.slow  # builds timm backbones
def test_reparameterize_folds_timm_backbones_and_can_be_undone():
    timm = pytest.importorskip("timm")
    backbone = timm.create_model("repvit_m1", pretrained=False, features_only=True).eval()
    model = SimpleNamespace(vision_encoder=SimpleNamespace(backbone=SimpleNamespace(timm_model=backbone)))
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        plain = backbone(x)
        undo, info = reparameterize(model)
        folded = model.vision_encoder.backbone.timm_model
        assert info["mode"] == "reparameterized" and folded is not backbone
        assert relative_diff(folded(x), plain) < 1e-4
        assert sum(p.numel() for p in folded.parameters()) < sum(p.numel() for p in backbone.parameters())
    undo()
    assert model.vision_encoder.backbone.timm_model is backbone


def test_models_without_a_timm_backbone_stay_plain():
    undo, info = reparameterize(SimpleNamespace())
    assert info["mode"] == "plain"
    undo()


def test_cuda_graph_falls_back_to_the_plain_function_when_capture_fails():
    if torch.cuda.is_available():
        pytest.skip("this checks the fallback on a machine without CUDA")

    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    fn, info = cuda_graph(double, torch.ones(3))
    assert fn is double and info["mode"] == "eager" and info["why"]
