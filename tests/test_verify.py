"""`provision verify`: the offline EdgeTAM segmentation, on the exact architecture with random weights.

The model goes through the real cache layout and the real loading code (no mocks in the model
path). Random weights cannot segment, so the quality gate is tested with that fact: it must fail.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT, run_cli
from PIL import Image

from edgetam_provision.errors import EnvironmentProblem, ModelMissingError
from edgetam_provision.hub.layout import repo_folder_name
from edgetam_provision.repos import EDGETAM_REPO
from edgetam_provision.verify.runtime import choose_device
from edgetam_provision.verify.segment import check_environment
from edgetam_provision.verify.synthetic import EXPECTED_PARAMETERS, build_model_files, install_into_cache


@pytest.fixture(scope="session")
def edgetam_files() -> dict[str, bytes]:
    return build_model_files()


@pytest.fixture(scope="session")
def edgetam_cache(edgetam_files, tmp_path_factory) -> Path:
    """A cache holding the random-weight model under the real repo id."""
    cache = tmp_path_factory.mktemp("edgetam-cache")
    install_into_cache(cache, EDGETAM_REPO, edgetam_files)
    return cache


@pytest.fixture(scope="module")
def verified(edgetam_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("overlays")
    res = run_cli("verify", "--cache-dir", edgetam_cache, "--device", "cpu", "--runs", "1",
                  "--no-quality-gate", "--out", out, "--json")
    return res, out, edgetam_cache


def test_all_four_cases_run_and_the_report_is_complete(verified):
    res, _, _cache = verified
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["ok"] is True
    r = data["report"]
    assert r["passed"] is True and r["device"] == "cpu" and r["synthetic"] is False
    assert r["parameters"] == EXPECTED_PARAMETERS
    assert len(r["commit"]) == 40
    for key in ("load_s", "first_inference_s", "encode_ms", "four_cases_warm_ms", "total_s"):
        assert r[key] > 0
    assert set(r["versions"]) >= {"torch", "transformers", "timm", "huggingface_hub", "python"}
    assert [c["name"] for c in r["cases"]] == ["single point", "two points", "box", "two objects"]
    assert [len(c["objects"]) for c in r["cases"]] == [1, 1, 1, 2]
    for case in r["cases"]:
        assert case["latency_ms"] > 0
        for obj in case["objects"]:
            assert len(obj["iou_scores"]) == 3 and 0 < obj["area"] <= 1800 * 1200
            assert "points_inside" in obj or "box_fill" in obj
    assert {c["kind"] for c in r["checks"]} == {"shape", "finite", "non-empty"}
    assert Path(r["image"]).name == "truck.jpg" and r["yardstick"] == "reference"
    assert r["quality_gate"]["applied"] is False and "disabled" in r["quality_gate"]["why_not"]
    assert r["reference"]["cases"]["box"] == {"iou_scores": [[0.947, 0.978, 0.945]], "ms": 42}
    text = run_cli("verify", "--cache-dir", verified[2], "--device", "cpu", "--runs", "1",
                   "--no-quality-gate", "--out", verified[1]).stdout
    assert "0.947  0.978  0.945" in text and "8491 ms" in text
    folded = r["acceleration"]["backbone"]
    assert folded["mode"] == "reparameterized" and folded["relative_diff"] < 1e-3
    assert r["acceleration"]["cuda_graphs"] is False  # CPU


def test_overlays_are_pngs_of_the_image_size(verified):
    res, out, _cache = verified
    report = json.loads(res.stdout)["report"]
    paths = [Path(c["overlay"]) for c in report["cases"]]
    assert sorted(p.name for p in paths) == sorted(p.name for p in out.iterdir())
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (1800, 1200)


def test_random_weights_under_the_real_name_fail_the_reference_naming_the_first_case(edgetam_cache, tmp_path):
    res = run_cli("verify", "--cache-dir", edgetam_cache, "--device", "cpu", "--runs", "1",
                  "--out", tmp_path, "--json")
    assert res.exit_code == 9
    data = json.loads(res.stdout)
    report = data["report"]
    assert report["passed"] is False and report["quality_gate"]["applied"] is True
    assert report["failures"][0].startswith("single point: mask ") and "reference" in report["failures"][0]
    assert data["error"] == "verification" and data["message"] and data["hint"]  # the common error keys
    assert "verification failed: single point" in res.stderr and "other weights" in res.stderr


def test_the_scene_gates_on_the_best_of_three_masks_against_ground_truth(edgetam_cache, tmp_path):
    res = run_cli("verify", "--cache-dir", edgetam_cache, "--device", "cpu", "--runs", "1",
                  "--image", "scene", "--out", tmp_path, "--json")
    report = json.loads(res.stdout)["report"]
    assert res.exit_code == 9 and report["yardstick"] == "ground truth"
    for obj in (o for c in report["cases"] for o in c["objects"]):
        assert 0 <= obj["gt_iou"] <= obj["gt_iou_best"] <= 1
    assert any("best of the three masks overlaps ground truth" in f for f in report["failures"])


@pytest.mark.slow
def test_synthetic_self_test_needs_no_cached_model(tmp_path):
    res = run_cli("verify", "--synthetic", "--cache-dir", tmp_path / "empty", "--device", "cpu",
                  "--runs", "1", "--out", tmp_path / "o", "--json")
    assert res.exit_code == 0, res.stderr
    r = json.loads(res.stdout)["report"]
    assert r["synthetic"] is True and r["parameters"] == EXPECTED_PARAMETERS
    assert r["quality_gate"]["why_not"] == "random weights cannot segment (self-test)"
    assert not (tmp_path / "empty").exists()


@pytest.mark.slow
def test_or_synthetic_falls_back_with_a_note_when_weights_are_missing(tmp_path):
    res = run_cli("verify", "--or-synthetic", "--cache-dir", tmp_path / "empty", "--device", "cpu",
                  "--runs", "1", "--out", tmp_path / "o")
    assert res.exit_code == 0
    assert "self-test" in res.stdout and "provision fetch" in res.stdout


def test_missing_repo_names_it_and_how_to_get_it(tmp_path):
    res = run_cli("verify", "--cache-dir", tmp_path, "--device", "cpu")
    assert res.exit_code == 7
    assert EDGETAM_REPO in res.stderr and "provision fetch" in res.stderr


def test_missing_file_in_the_snapshot_is_reported(edgetam_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(edgetam_cache, cache, symlinks=True)
    snap = next((cache / repo_folder_name(EDGETAM_REPO) / "snapshots").iterdir())
    (snap / "model.safetensors").unlink()
    res = run_cli("verify", "--cache-dir", cache, "--device", "cpu", "--runs", "1")
    assert res.exit_code == 7
    assert "cannot be loaded offline" in res.stderr and "hint:" in res.stderr


def test_custom_image_and_point_have_no_ground_truth(edgetam_cache, tmp_path):
    img = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 480), (10, 120, 200)).save(img)
    res = run_cli("verify", "--cache-dir", edgetam_cache, "--device", "cpu", "--runs", "1",
                  "--image", img, "--point", "320,240", "--out", tmp_path / "o", "--json", "--eager")
    assert res.exit_code == 0, res.stderr
    r = json.loads(res.stdout)["report"]
    assert r["acceleration"]["backbone"] == {"mode": "plain"}
    assert [c["name"] for c in r["cases"]] == ["points"]
    assert r["quality_gate"]["why_not"] == "no reference or ground truth for this image and these prompts"


def test_malformed_point_is_a_usage_error(edgetam_cache):
    res = run_cli("verify", "--cache-dir", edgetam_cache, "--point", "500")
    assert res.exit_code == 2 and "--point" in res.stderr


def fake_torch(mps: bool, cuda: bool):
    return SimpleNamespace(backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps)),
                           cuda=SimpleNamespace(is_available=lambda: cuda))


@pytest.mark.parametrize(("mps", "cuda", "expected"), [
    (True, True, "mps"), (True, False, "mps"), (False, True, "cuda"), (False, False, "cpu")])
def test_auto_device_prefers_mps_then_cuda_then_cpu(mps, cuda, expected):
    assert choose_device("auto", fake_torch(mps, cuda)) == expected


def test_an_unavailable_explicit_device_is_refused():
    with pytest.raises(EnvironmentProblem, match="mps is not available"):
        choose_device("mps", fake_torch(False, True))
    assert choose_device("cpu", fake_torch(True, True)) == "cpu"


def test_known_bad_transformers_is_reported(tmp_path):
    versions = {"torch": "2.9", "timm": "1.0", "transformers": "5.17.0"}
    with pytest.raises(EnvironmentProblem, match=r"transformers 5\.17\.0 cannot run"):
        check_environment(versions, tmp_path)


def test_older_transformers_needs_the_backbone_config_and_says_so(tmp_path):
    versions = {"torch": "2.9", "timm": "1.0", "transformers": "4.57.6"}
    with pytest.raises(ModelMissingError, match=r"timm/repvit_m1\.dist_in1k/config\.json"):
        check_environment(versions, tmp_path)
    install_into_cache(tmp_path, "timm/repvit_m1.dist_in1k", {"config.json": b"{}"})
    check_environment(versions, tmp_path)


def test_shipped_pictures_are_the_reference_photo_and_the_generated_scene():
    import hashlib

    from edgetam_provision.verify.run import assets

    packaged = REPO_ROOT / "edgetam_provision" / "verify" / "assets"
    for name in ("truck.jpg", "TRUCK.md"):  # stored once, in the package; test_images/ links to it
        assert (REPO_ROOT / "test_images" / name).resolve() == (packaged / name).resolve()
    note = (assets() / "TRUCK.md").read_text()  # the license note travels with the photo
    assert hashlib.sha256((assets() / "truck.jpg").read_bytes()).hexdigest() in note
    spec = json.loads((assets() / "scene_cases.json").read_text())
    with Image.open(assets() / spec["image"]) as im:
        assert im.size == (1800, 1200)
    for case in spec["cases"]:
        for name in case["truth"]:
            with Image.open(assets() / name) as m:
                assert m.size == (1800, 1200)


def test_backup_restore_round_trip_loads_offline_with_transformers(edgetam_cache, tmp_path):
    """Spine: cache -> backup -> restore into an empty cache -> from_pretrained offline works."""
    out = tmp_path / "backups"
    assert run_cli("backup", EDGETAM_REPO, "--out", out, "--cache-dir", edgetam_cache).exit_code == 0
    fresh = tmp_path / "fresh"
    assert run_cli("restore", out, "--cache-dir", fresh).exit_code == 0
    res = run_cli("verify", "--cache-dir", fresh, "--device", "cpu", "--runs", "1", "--no-quality-gate",
                  "--out", tmp_path / "o", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["report"]["parameters"] == EXPECTED_PARAMETERS


def test_synthetic_repos_with_nested_files_pass_the_integrity_check(tmp_path):
    from edgetam_provision.hub.cache import check_revision

    commit = install_into_cache(tmp_path, "org/nested", {"a/b/c.bin": b"x" * 3000, "top.json": b"{}"})
    state = check_revision(tmp_path, "org/nested", commit)
    assert state.ok and {f.path for f in state.files} == {"a/b/c.bin", "top.json"}


def test_version_rules_use_real_version_ordering():
    from edgetam_provision.verify.runtime import library_verdict, needs_backbone_config

    assert not library_verdict("transformers", "5.17.1").ok
    assert library_verdict("transformers", "5.18.0").ok
    assert not library_verdict("transformers", "4.56.2").ok
    assert needs_backbone_config("5.24.0rc1")  # a pre-release of 5.24 is older than 5.24
    assert not needs_backbone_config("5.24.0")


def test_debug_reaches_the_worker_process(edgetam_files, tmp_path):
    from conftest import run_cli_process

    broken = b'{"model_type": "edgetam", "vision_config": 5}'
    install_into_cache(tmp_path / "c", "org/broken", {**edgetam_files, "config.json": broken})
    args = ["verify", "--repo", "org/broken", "--device", "cpu", "--runs", "1", "--no-quality-gate",
            "--cache-dir", tmp_path / "c", "--out", tmp_path / "o"]
    res = run_cli_process("--debug", *args)
    assert res.returncode == 8, res.stderr
    assert "Traceback (most recent call last)" in res.stderr and "error: EdgeTAM could not run" in res.stderr


def test_the_shipped_scene_is_what_the_generator_writes(tmp_path):
    import subprocess
    import sys

    from edgetam_provision.verify.run import assets

    generator = REPO_ROOT / "test_images" / "generate.py"
    subprocess.run([sys.executable, str(generator), str(tmp_path)], check=True)
    for made in tmp_path.iterdir():
        assert made.read_bytes() == (assets() / made.name).read_bytes(), made.name


@pytest.mark.parametrize(("args", "says"), [
    (["--image", "{bad}"], "not a readable picture"),
    (["--image", "{empty}"], "not a readable picture"),
    (["--image", "{cut}"], "not a readable picture"),
    (["--image", "{small}"], "only 8x8 pixels"),
    (["--box", "1725,850,75,275"], "not ordered"),
    (["--point", "5000,5000"], "not inside the 1800x1200 image"),
    (["--point", "-10,20"], "not inside"),
    (["--point", "nan,nan"], "not inside"),
    (["--box", "0,0,1e9,1e9"], "not inside"),
])
def test_bad_verify_inputs_are_usage_errors_before_the_model_loads(tmp_path, args, says):
    import time

    img = tmp_path / "ok.jpg"
    Image.new("RGB", (640, 480), (10, 120, 200)).save(img)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.jpg").write_bytes(img.read_bytes()[:300])
    Image.new("RGB", (8, 8)).save(tmp_path / "small.png")
    names = {"bad": tmp_path / "bad.png", "empty": tmp_path / "empty.jpg", "cut": tmp_path / "cut.jpg",
             "small": tmp_path / "small.png"}
    t0 = time.monotonic()
    res = run_cli("verify", "--cache-dir", tmp_path / "c", *[a.format(**names) for a in args])
    assert res.exit_code == 2 and says in res.stderr and "hint:" in res.stderr
    assert time.monotonic() - t0 < 5  # no model was loaded (generous: shared machines)


def test_with_a_custom_image_the_built_in_prompts_are_scaled_and_the_report_says_so(edgetam_cache, tmp_path):
    img = tmp_path / "photo.jpg"
    Image.new("RGB", (900, 600), (10, 120, 200)).save(img)
    res = run_cli("verify", "--cache-dir", edgetam_cache, "--device", "cpu", "--runs", "1", "--image", img,
                  "--out", tmp_path / "o", "--json")
    assert res.exit_code == 0, res.stderr
    r = json.loads(res.stdout)["report"]
    assert r["prompts"] == "built-in, scaled from 1800x1200 to 900x600"
    assert r["cases"][2]["prompts"]["box"] == [37.5, 137.5, 862.5, 425.0]


def test_an_absent_device_is_said_before_anything_is_built(tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    trap = tmp_path / "sitecustomize"  # the worker process fails loudly if it builds the model
    trap.mkdir()
    (trap / "sitecustomize.py").write_text(
        "import edgetam_provision.verify.synthetic as s\n"
        "def _no(*a, **k): raise SystemExit('the model was built')\n"
        "s.build_model_files = _no\n")
    monkeypatch.setenv("PYTHONPATH", f"{trap}:{os.environ.get('PYTHONPATH', '')}")
    res = run_cli("verify", "--synthetic", "--device", "cuda", "--cache-dir", tmp_path)
    assert res.exit_code == 8 and "cuda is not available" in res.stderr, res.stderr


def test_a_repo_that_is_not_edgetam_is_named_before_anything_loads(tmp_path):
    install_into_cache(tmp_path / "c", "acme/tiny", {"config.json": b'{"model_type": "bert"}',
                                                     "model.safetensors": b"x" * 100})
    res = run_cli("verify", "--repo", "acme/tiny", "--cache-dir", tmp_path / "c", "--device", "cpu")
    assert res.exit_code == 2 and "acme/tiny is a bert checkpoint, not EdgeTAM" in res.stderr
    assert "restore or fetch it again" not in res.stderr
