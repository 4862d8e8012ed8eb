"""Repos without an org (`gpt2`, as `hf download gpt2` takes it) work end to end: fetch, restore,
offline load by huggingface_hub, check, backup and serve; the folder grammar stays unambiguous."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import hf_cache_verify, run_cli
from hub_standin import HubRepo
from hypothesis import assume, given
from hypothesis import strategies as st

from edgetam_provision.hub.layout import (
    FOLDER_RE,
    repo_folder_name,
    repo_id_from_folder,
    repo_type_from_folder,
    valid_repo_id,
)

FILES = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": os.urandom(300_000)}

def hub_accepts(repo_id: str) -> bool:
    """huggingface_hub's own judge of a repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


#: parts near the border: word characters at the ends, any mix of . - _ inside, lengths around 96
PART = st.one_of(
    st.from_regex(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,12}[A-Za-z0-9_])?", fullmatch=True),
    st.builds(lambda n, end: "a" * n + end, st.integers(93, 98), st.sampled_from(["", "b", ".git"])))
NEAR_VALID = st.one_of(PART, st.tuples(PART, PART).map("/".join))
#: anything at all, from an alphabet that holds every character the rule turns on
ANY_ID = st.one_of(NEAR_VALID, st.text(alphabet="aZ9_.-/ é\n", max_size=14))


@given(ANY_ID)
def test_a_repo_id_is_valid_exactly_when_huggingface_hub_accepts_it(repo_id):
    assert valid_repo_id(repo_id) == hub_accepts(repo_id)


@given(NEAR_VALID, st.sampled_from(["model", "dataset"]))
def test_every_valid_repo_id_maps_to_its_cache_folder_name_and_back(repo_id, repo_type):
    assume(valid_repo_id(repo_id))
    folder = repo_folder_name(repo_id, repo_type)
    assert repo_id_from_folder(folder) == repo_id and repo_type_from_folder(folder) == repo_type


@given(st.text(alphabet="ab_-.", min_size=1, max_size=12), st.sampled_from(["models--", "datasets--"]))
def test_a_folder_name_is_a_repo_folder_exactly_when_it_names_a_valid_repo_id(tail, prefix):
    candidate = tail.replace("--", "/", 1)  # a valid id holds no "--": the first one is the separator
    parsed = repo_id_from_folder(prefix + tail)
    assert bool(FOLDER_RE.match(prefix + tail)) == valid_repo_id(candidate)
    assert parsed == (candidate if valid_repo_id(candidate) else None)


@pytest.fixture(scope="module")
def gpt2(hub):
    hub.add(HubRepo("gpt2", FILES))
    return hub


def test_a_single_name_repo_is_fetched_restored_and_loaded_offline(gpt2, tmp_path):
    from huggingface_hub import scan_cache_dir, snapshot_download

    out, cache = tmp_path / "b", tmp_path / "cache"
    res = run_cli("fetch", "--local", "--endpoint", gpt2.endpoint, "--repo", "gpt2", "--out", out, "--json")
    assert res.exit_code == 0, (res.stderr, [r[1] for r in gpt2.requests if "gpt2" in r[1]])
    [archive] = json.loads(res.stdout)["archives"]
    assert os.path.basename(archive["archive"]).startswith("models--gpt2--")
    assert run_cli("check", out).exit_code == 0
    res = run_cli("restore", out, "--cache-dir", cache, "--json")
    assert res.exit_code == 0, res.stderr
    snap = snapshot_download("gpt2", cache_dir=cache, local_files_only=True)  # judged by the hub itself
    assert {p: Path(snap, p).read_bytes() for p in FILES} == FILES
    assert [r.repo_id for r in scan_cache_dir(cache).repos] == ["gpt2"]
    assert hf_cache_verify(gpt2, cache, "gpt2").returncode == 0
    res = run_cli("backup", "gpt2", "--cache-dir", cache, "--out", tmp_path / "again", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["backups"][0]["sha256"] == archive["sha256"]  # the same bytes again


def test_a_single_name_repo_is_served_to_huggingface_hub(gpt2, tmp_path):
    pytest.importorskip("uvicorn")
    from conftest import download
    from test_serve import client, start_mirror

    served = tmp_path / "served"
    download(gpt2, served, "gpt2")
    mirror = start_mirror(served, "--repo", "gpt2")
    try:
        code = ("import sys; from huggingface_hub import snapshot_download;"
                "print(snapshot_download('gpt2', cache_dir=sys.argv[1]))")
        res = client(mirror.url, code, tmp_path / "c")
    finally:
        mirror.stop()
    assert res.returncode == 0, res.stderr
    snap = res.stdout.strip()
    assert {p: Path(snap, p).read_bytes() for p in FILES} == FILES
