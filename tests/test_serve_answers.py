"""serve's answers without a server: the ASGI app called in-process on an index of a hand-made
cache (fast enough for properties). End to end, with real clients: test_serve.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetam_provision.hub.layout import path_problem, repo_folder_name
from edgetam_provision.repos import RepoSpec
from edgetam_provision.serve import index as index_module
from edgetam_provision.serve.app import MirrorApp, tree
from edgetam_provision.serve.index import ServedFile, build_index
from edgetam_provision.serve.request import byte_range
from edgetam_provision.verify.synthetic import install_into_cache


def mirror_of(cache: Path, *repos: str) -> MirrorApp:
    return MirrorApp(build_index(cache, [RepoSpec(r) for r in repos], False, lambda _: None), lambda _: None)


def ask(app: MirrorApp, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET `url` from the app as uvicorn hands it a request: the raw path, the query apart."""
    parts = urlsplit(url)
    scope = {"type": "http", "method": "GET", "path": parts.path, "raw_path": parts.path.encode(),
             "query_string": parts.query.encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, None, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


# ---------------------------------------------------------------------------- names

ANY_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="/\x00")
VISIBLE_CHAR = st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="/")
NAME_PART = st.one_of(st.text(ANY_CHAR, min_size=1, max_size=12),
                      st.text(VISIBLE_CHAR, min_size=1, max_size=12)).filter(lambda p: p not in (".", ".."))


@settings(max_examples=examples(ci=60, dev=25), deadline=None)
@given(name=st.lists(NAME_PART, min_size=1, max_size=3).map("/".join), data=st.binary(max_size=64))
def test_a_name_is_listed_exactly_when_the_name_rule_keeps_it_and_then_resolves(name, data):
    """What is listed can be served, and nothing is listed that could not: one rule decides,
    hub.layout.path_problem. The URL is huggingface_hub's own (hf_hub_url)."""
    from huggingface_hub import hf_hub_url

    with tempfile.TemporaryDirectory() as tmp:
        install_into_cache(Path(tmp), "org/names", {name: data})
        app = mirror_of(Path(tmp), "org/names")
        status, body = ask(app, "http://mirror/api/models/org/names/tree/main?recursive=true")
        if path_problem(name) is None:
            assert status == 200 and [e["path"] for e in json.loads(body)] == [name]
            assert ask(app, hf_hub_url("org/names", name, endpoint="http://mirror")) == (200, data)
        else:
            assert status == 503 and path_problem(name).encode() in body.replace(b"\\\\", b"\\")
            assert ask(app, hf_hub_url("org/names", name, endpoint="http://mirror"))[0] == 503


# ---------------------------------------------------------------------------- Range

@settings(max_examples=examples(ci=300, dev=75), deadline=None)
@given(header=st.text(max_size=40) | st.from_regex(r"\A\s*bytes\s*=\s*[0-9]*-[0-9]*\s*\Z"),
       size=st.integers(0, 10**6))
def test_any_range_header_gets_a_span_inside_the_file_or_416(header, size):
    wanted = byte_range(header, size)
    assert wanted is None or 0 <= wanted[0] <= wanted[1] <= size


@settings(max_examples=examples(ci=200, dev=50), deadline=None)
@given(start=st.integers(0, 2**70), end=st.integers(0, 2**70) | st.none(), zeros=st.integers(0, 5000),
       extra=st.integers(0, 5000), size=st.integers(0, 10**6))
def test_a_range_number_means_its_value_whatever_its_length(start, end, zeros, extra, size):
    """Leading zeros change nothing, and a number of thousands of digits (past int's digit limit)
    means what any number past the file's size means."""
    def spec(n: int | None, pad: int) -> str:
        return "" if n is None else "0" * pad + str(n)

    plain = byte_range(f"bytes={start}-{spec(end, 0)}", size)
    assert byte_range(f"bytes={spec(start, zeros)}-{spec(end, zeros)}", size) == plain
    huge = "9" * (extra + 30)
    assert byte_range(f"bytes={huge}-", size) is None
    assert byte_range(f"bytes={start}-{huge}", size) == byte_range(f"bytes={start}-", size)
    assert byte_range(f"bytes=-{huge}", size) == ((0, size) if size else None)


# ---------------------------------------------------------------------------- the listing is the Hub's

def test_pointer_size_is_the_size_of_the_lfs_pointer_as_the_hub_gives_it():
    """huggingface_hub's own docstring example: a 497764107-byte LFS file, pointer_size 134."""
    from huggingface_hub.hf_api import RepoFile

    f = ServedFile("model.bin", "d88b0d6a6ff9c3f8151f9d3228f57092aaea997f09af009eefd7373a77b5abb9", 497764107,
                   Path("/nonexistent"))
    entry = tree({"model.bin": f}, "", recursive=True)[0]
    assert RepoFile(**entry).lfs.pointer_size == 134
    small = ServedFile("w.safetensors", "0" * 64, 2000, Path("/nonexistent"))
    assert RepoFile(**tree({"w": small}, "", True)[0]).lfs.pointer_size == len(small.pointer()) == 129


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_tree_oids_are_gits_own(tmp_path):
    """Each file's oid is git's blob id (of its LFS pointer for an LFS file), each folder's is git's
    tree id, as `git write-tree` computes them for the same files."""
    files = {"config.json": b"{}", "model.safetensors": b"W" * 3000, "sub/a.txt": b"a\n",
             "sub/deeper/b.txt": b"b\n", "sub-x.txt": b"sorts between sub and sub/"}
    install_into_cache(tmp_path / "c", "org/git", files)
    app = mirror_of(tmp_path / "c", "org/git")
    served = next(iter(app.index.repos.values())).revisions
    (revision,) = served.values()
    work = tmp_path / "git"
    for p, f in revision.files.items():
        (work / p).parent.mkdir(parents=True, exist_ok=True)
        (work / p).write_bytes(f.pointer() if f.lfs else files[p])

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    git("add", "-A")
    root = git("write-tree")
    listed = {e["path"]: e["oid"] for e in tree(revision.files, "", recursive=False)}
    listed.update({e["path"]: e["oid"] for e in tree(revision.files, "sub", recursive=False)})
    assert listed == {p: git("rev-parse", f"{root}:{p}") for p in listed}
    assert set(listed) == {"config.json", "model.safetensors", "sub", "sub-x.txt", "sub/a.txt", "sub/deeper"}


# ---------------------------------------------------------------------------- a repair, without a rescan

def test_a_damaged_revision_is_checked_again_only_when_its_files_change(tmp_path, monkeypatch):
    commit = install_into_cache(tmp_path, "org/fix", {"config.json": b"{}", "w.safetensors": b"W" * 100})
    blob = next(p for p in (tmp_path / repo_folder_name("org/fix") / "blobs").iterdir() if len(p.name) == 64)
    blob.write_bytes(b"X" * 100)
    app = mirror_of(tmp_path, "org/fix")
    checks = []
    real = index_module.check_revision
    monkeypatch.setattr(index_module, "check_revision", lambda *a, **k: checks.append(a) or real(*a, **k))
    url = "http://mirror/org/fix/resolve/main/w.safetensors"
    assert [ask(app, url)[0] for _ in range(5)] == [503] * 5 and checks == []  # untouched: stats only
    tmp = blob.with_name("tmp")
    tmp.write_bytes(b"W" * 100)
    tmp.replace(blob)  # as restore repairs a blob
    assert ask(app, url) == (200, b"W" * 100) and len(checks) == 1
    assert ask(app, f"http://mirror/api/models/org/fix/revision/{commit}")[0] == 200 and len(checks) == 1


def test_a_tree_under_a_folder_lists_it_and_under_a_missing_path_is_entry_not_found(tmp_path):
    install_into_cache(tmp_path, "org/t", {"config.json": b"{}", "sub/a.txt": b"a", "sub/in/b.txt": b"b"})
    app = mirror_of(tmp_path, "org/t")
    status, body = ask(app, "http://mirror/api/models/org/t/tree/main/sub")
    assert status == 200 and {(e["type"], e["path"]) for e in json.loads(body)} == {
        ("directory", "sub/in"), ("file", "sub/a.txt")}
    for missing in ("nope", "sub/../config.json", "conf"):
        assert ask(app, f"http://mirror/api/models/org/t/tree/main/{missing}")[0] == 404
