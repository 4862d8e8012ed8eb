"""Anchored at the Hub, from this machine: every archive a fetch keeps, and every backup `check --hub`
passes, equals the Hub's own listing of its revision (commit, paths, sizes, blob hashes), asked from
here without any credential; where the listing cannot be had, the summary says so and why.

The host's "Hub" and this machine's can be told apart: the host's Python is a wrapper that sets
its own HF_ENDPOINT, as a host behind a poisoned mirror would have it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import examples, run_cli, tiny_files
from hub_standin import HubRepo, HubStandIn, git_blob_sha1
from hypothesis import given, settings
from hypothesis import strategies as st
from sshd import BOGUS_TOKEN

from edgetam_provision.errors import IntegrityError
from edgetam_provision.hub.layout import FileRecord
from edgetam_provision.hub.manifest import FORMAT, ArchiveEntry, HubCheck, read_manifest, record
from edgetam_provision.trust import hub_listing
from edgetam_provision.trust.hub_check import check_entry, disagreements
from edgetam_provision.trust.hub_listing import (
    HubListing,
    ListedFile,
    Unavailable,
    ask_listing,
    selected,
)

EVIL_CONFIG = b'{"model_type": "evil", "seed": 1}'  # as long as tiny_files(1)'s config.json


@pytest.fixture
def honest():
    """The Hub as this machine sees it: the tree a page at a time, folders listed, credentials refused."""
    server = HubStandIn([HubRepo("org/tiny", tiny_files(1))]).start()
    server.page_size, server.list_folders = 2, True
    yield server
    server.stop()


@pytest.fixture
def poisoned(honest):
    """A mirror with the same repo and commit, whose config.json is another: self-consistent."""
    commit = honest.repos["org/tiny"].commit
    server = HubStandIn([HubRepo("org/tiny", {**tiny_files(1), "config.json": EVIL_CONFIG},
                                 commit=commit)]).start()
    yield server
    server.stop()


@pytest.fixture
def lying(honest):
    """A mirror whose config.json is another, served under the honest one's blob id (git sha1) and
    sha256: the host's cache names it as the Hub does, so its archive, listing and commit agree with
    the Hub's; only hashing the blob's bytes tells it apart."""
    repo = honest.repos["org/tiny"]
    files = {**tiny_files(1), "config.json": EVIL_CONFIG}
    lie = HubRepo("org/tiny", files, commit=repo.commit)
    good = repo.files["config.json"]
    lie._known["config.json"] = (files["config.json"], git_blob_sha1(good), hashlib.sha256(good).hexdigest())
    server = HubStandIn([lie]).start()
    yield server
    server.stop()


@pytest.fixture
def stale_credentials(tmp_path, monkeypatch):
    """Every credential a client could pick up on its own: HF_TOKEN, a token file, a ~/.netrc entry."""
    home = tmp_path / "home"
    (home / "hf").mkdir(parents=True)
    (home / "hf" / "token").write_text(BOGUS_TOKEN)
    (home / ".netrc").write_text(f"machine 127.0.0.1 login x password {BOGUS_TOKEN}\n"
                                 f"machine localhost login x password {BOGUS_TOKEN}\n")
    (home / ".netrc").chmod(0o600)
    for k, v in {"HF_TOKEN": BOGUS_TOKEN, "HUGGING_FACE_HUB_TOKEN": BOGUS_TOKEN, "HF_HOME": str(home / "hf"),
                 "HOME": str(home)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("NETRC", raising=False)


def host_python(tmp_path: Path, endpoint: str) -> Path:
    """The host's Python, downloading from `endpoint` whatever this machine's HF_ENDPOINT says."""
    wrapper = tmp_path / "host-python"
    wrapper.write_text(f"#!/bin/sh\nHF_ENDPOINT={endpoint} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def fetch_here(tmp_path: Path, host_endpoint: str, *extra: str):
    return run_cli("fetch", "--local", "--remote-python", host_python(tmp_path, host_endpoint),
                   "--repo", "org/tiny", "--out", tmp_path / "b", *extra)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- fetch

def test_an_honest_fetch_is_checked_against_the_hubs_listing_and_the_manifest_records_it(
        honest, tmp_path, monkeypatch, stale_credentials):
    monkeypatch.setenv("HF_ENDPOINT", honest.endpoint)
    seen = len(honest.requests)
    res = fetch_here(tmp_path, honest.endpoint)
    assert res.exit_code == 0, res.stderr
    assert "checked against the Hub's listing (3 files)" in res.stdout
    [entry] = read_manifest(tmp_path / "b").values()
    assert entry.hub is not None and entry.hub.files == 3 and entry.hub.endpoint == honest.endpoint
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["format"] == FORMAT
    pages = [p for m, p, _ in honest.requests[seen:] if "/tree/" in p and "cursor=" in p]
    assert pages, "the listing's later pages were asked"
    assert honest.authorized(seen) == []

    again = fetch_here(tmp_path, honest.endpoint, "--json")  # already here: checked again, said again
    assert again.exit_code == 0, again.stderr
    [a] = json.loads(again.stdout)["archives"]
    assert a["already_here"] and a["hub"]["checked"] is True and a["hub"]["files"] == 3


def test_a_filtered_fetch_is_checked_against_the_listing_filtered_alike(honest, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", honest.endpoint)
    res = fetch_here(tmp_path, honest.endpoint, "--include", "*.json", "--include", "sub/")
    assert res.exit_code == 0, res.stderr
    assert "checked against the Hub's listing (2 files)" in res.stdout


def test_a_host_behind_a_poisoned_mirror_is_refused_naming_config_json_and_nothing_is_kept(
        honest, poisoned, tmp_path, monkeypatch):
    """The host's archive is self-consistent (every blob matches its name, the manifest matches the
    archive, the commit is the Hub's); only the Hub's listing, asked from here, tells it apart."""
    monkeypatch.setenv("HF_ENDPOINT", honest.endpoint)
    res = fetch_here(tmp_path, poisoned.endpoint)
    assert res.exit_code == 1, res.stderr
    evil, good = (r.repos["org/tiny"].oid("config.json") for r in (poisoned, honest))
    line = next(x for x in res.stderr.splitlines() if x.startswith("error: "))
    assert "config.json" in line and line.index(evil) < line.index(good), line
    assert "nothing of it was kept" in res.stderr
    assert list((tmp_path / "b").glob("*.tar*")) == []
    assert read_manifest(tmp_path / "b") == {}


@pytest.mark.parametrize("restore", [False, True], ids=["fetch", "fetch-restore"])
def test_a_blob_whose_bytes_are_not_its_name_fails_the_fetch_and_nothing_is_kept(
        honest, lying, restore, tmp_path, monkeypatch):
    """The archive is self-consistent and its listing is the Hub's, to the blob ids; config.json's
    bytes are not the blob it is named for. fetch hashes every blob before it says OK (the restore's
    own read, with --restore): exit 1, the archive removed from --out and its manifest, no cache."""
    monkeypatch.setenv("HF_ENDPOINT", honest.endpoint)
    cache = tmp_path / "cache"
    res = fetch_here(tmp_path, lying.endpoint, *(["--restore", "--cache-dir", cache] if restore else []))
    assert res.exit_code == 1, res.stdout + res.stderr
    good = honest.repos["org/tiny"].oid("config.json")
    line = next(x for x in res.stderr.splitlines() if x.startswith("error: "))
    assert "was refused" in line and good in line and "does not match its hash" in line, line
    assert res.stderr.count("error: ") == 1 and "removed from" in res.stderr
    assert list((tmp_path / "b").glob("*.tar*")) == [] and read_manifest(tmp_path / "b") == {}
    assert not cache.exists() or not any(cache.glob("models--*"))


def test_an_unreachable_endpoint_is_skipped_and_said_never_an_error(honest, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    res = fetch_here(tmp_path, honest.endpoint, "--json")
    assert res.exit_code == 0, res.stderr
    [a] = json.loads(res.stdout)["archives"]
    assert a["hub"]["checked"] is False and "unreachable" in a["hub"]["skipped"]
    [entry] = read_manifest(tmp_path / "b").values()
    assert entry.hub == HubCheck.from_dict(a["hub"])
    human = fetch_here(tmp_path, honest.endpoint)
    assert ("not checked against the Hub: the endpoint is unreachable from here (connection refused); "
            "the host's word") in human.stdout


def test_a_fetch_host_under_hf_hub_offline_is_said_not_checked(sshd, honest, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_cli("fetch", *sshd.ssh_args(), "--remote-python", sys.executable, "--endpoint", honest.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b", "--timeout", "10")
    assert res.exit_code == 0, res.stderr
    assert "not checked against the Hub: HF_HUB_OFFLINE is set; the host's word" in res.stdout


# ---------------------------------------------------------------------------- check --hub

def test_check_hub_passes_the_hubs_revision_and_refuses_another(honest, tmp_path, monkeypatch,
                                                                stale_credentials):
    monkeypatch.setenv("HF_ENDPOINT", honest.endpoint)
    assert fetch_here(tmp_path, honest.endpoint).exit_code == 0
    seen = len(honest.requests)
    ok = run_cli("check", tmp_path / "b", "--hub", "--json")
    assert ok.exit_code == 0, ok.stderr
    [h] = json.loads(ok.stdout)["hub"]
    assert h["checked"] is True and h["files"] == 3 and h["endpoint"] == honest.endpoint

    honest.repos["org/tiny"].files["config.json"] = EVIL_CONFIG  # the Hub's word now differs
    bad = run_cli("check", tmp_path / "b", "--hub")
    assert bad.exit_code == 1
    assert "config.json differs from the Hub's listing" in bad.stderr
    assert honest.authorized(seen) == []


def test_check_hub_offline_or_unreachable_says_so_and_passes(honest, tmp_path, monkeypatch):
    assert fetch_here(tmp_path, honest.endpoint, "--endpoint", honest.endpoint).exit_code == 0
    far = run_cli("check", tmp_path / "b", "--hub", "--endpoint", f"http://127.0.0.1:{closed_port()}")
    assert far.exit_code == 0 and "not checked against the Hub: the endpoint is unreachable" in far.stdout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    off = run_cli("check", tmp_path / "b", "--hub", "--endpoint", honest.endpoint)
    assert off.exit_code == 0
    assert "not checked against the Hub: HF_HUB_OFFLINE is set; the backup's word" in off.stdout


def test_check_hub_sends_the_token_named_and_only_that(honest, tmp_path, monkeypatch, stale_credentials):
    assert fetch_here(tmp_path, honest.endpoint, "--endpoint", honest.endpoint).exit_code == 0
    honest.accepted_tokens.add("hf_given")
    monkeypatch.setenv("GIVEN", "hf_given")
    seen = len(honest.requests)
    res = run_cli("check", tmp_path / "b", "--hub", "--endpoint", honest.endpoint, "--token-env", "GIVEN")
    assert res.exit_code == 0 and "checked against the Hub's listing (3 files)" in res.stdout
    assert {a for _m, _p, a in honest.requests[seen:]} == {"Bearer hf_given"}


def test_endpoint_without_hub_is_a_usage_error(tmp_path):
    res = run_cli("check", tmp_path, "--endpoint", "http://x")
    assert res.exit_code == 2 and "--hub" in res.stderr


# ---------------------------------------------------------------------------- the listing itself

def test_the_listing_is_asked_without_any_credential_the_machine_holds(honest, stale_credentials):
    seen = len(honest.requests)
    listing = ask_listing(honest.endpoint, "org/tiny", "main")
    repo = honest.repos["org/tiny"]
    assert listing.commit == repo.commit
    assert dict(listing.files) == {
        p: ListedFile(len(d), repo.oid(p), repo.etag(p) if repo.is_lfs(p) else None)
        for p, d in repo.files.items()}
    assert len(honest.requests) - seen >= 3 and honest.authorized(seen) == []


class Scripted:
    """An endpoint that answers every GET with what `answer(handler)` sends."""

    def __init__(self, answer) -> None:
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads, self.server.block_on_close = True, False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # close() waits for the loop to see it: every 0.05 s, not the default 0.5
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(code: int, body: bytes, **headers: str):
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            h.send_header(k.replace("_", "-"), v)
        h.end_headers()
        h.wfile.write(body)
    return answer


REVISION = json.dumps({"sha": "c" * 40}).encode()


def tree_loop(h: BaseHTTPRequestHandler) -> None:
    """A revision, then a tree whose next page is itself, forever."""
    body = REVISION if "/revision/" in h.path else b"[]"
    reply(200, body, Link=f'<{h.path}>; rel="next"')(h)


def silent(h: BaseHTTPRequestHandler) -> None:
    threading.Event().wait(5)


def drip(h: BaseHTTPRequestHandler) -> None:
    """A byte every 0.2 s: never silent for long, never done."""
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    for _ in range(1000):
        h.wfile.write(b" ")
        h.wfile.flush()
        threading.Event().wait(0.2)


@pytest.mark.parametrize("answer, words", [
    (reply(401, b"{}"), "without a token (HTTP 401: gated, private)"),
    (reply(403, b"{}"), "without a token (HTTP 403"),
    (reply(404, b"{}", X_Error_Code="RepoNotFound"), "HTTP 404"),
    (reply(500, b"oops"), "answered HTTP 500"),
    (reply(200, b"<html>"), "not JSON"),
    (reply(200, b"[" * 60_000), "not JSON"),
    (reply(200, b'{"sha": "../../etc"}'), "names no commit"),
    (reply(200, b"x" * 70_000), "larger than"),
    (reply(302, b"", Location="http://elsewhere.example/api"), "another host"),
    (tree_loop, "pages"),
    (silent, "unreachable from here (timed out)"),
    (drip, "did not give the whole listing in time"),
])
def test_an_endpoint_that_does_not_give_a_usable_listing_is_unavailable_with_the_reason(
        answer, words, monkeypatch):
    monkeypatch.setattr(hub_listing, "MAX_RESPONSE_BYTES", 65536)
    monkeypatch.setattr(hub_listing, "MAX_PAGES", 20)
    server = Scripted(answer)
    try:
        with pytest.raises(Unavailable, match=words.replace("(", r"\(").replace(")", r"\)")):
            ask_listing(server.url, "org/tiny", "main", deadline_s=1)
    finally:
        server.close()


@pytest.mark.parametrize("entry", [
    {"type": "file", "path": "a", "size": -1, "oid": "a" * 40},
    {"type": "file", "path": "a", "size": True, "oid": "a" * 40},
    {"type": "file", "path": "a", "size": 1, "oid": "zz"},
    {"type": "file", "path": "a", "size": 1, "oid": "a" * 40, "lfs": {"oid": "b" * 40}},
    {"type": "file", "path": "a", "size": 1, "oid": "a" * 40, "lfs": {"oid": "b" * 64, "size": 2}},
    {"type": "symlink", "path": "a"},
    "a",
])
def test_a_tree_entry_is_checked_field_by_field(entry):
    def answer(h):
        reply(200, REVISION if "/revision/" in h.path else json.dumps([entry]).encode())(h)

    server = Scripted(answer)
    try:
        with pytest.raises(Unavailable):
            ask_listing(server.url, "org/tiny", "main")
    finally:
        server.close()


# ---------------------------------------------------------------------------- the comparison

HEX = "0123456789abcdef"
paths = st.lists(st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6})?(\.json|\.bin)?", fullmatch=True),
                 min_size=1, max_size=6, unique=True)


@st.composite
def listings(draw) -> HubListing:
    files = {p: ListedFile(draw(st.integers(0, 10**9)), draw(st.text(HEX, min_size=40, max_size=40)),
                           draw(st.one_of(st.none(), st.text(HEX, min_size=64, max_size=64))))
             for p in draw(paths)}
    return HubListing("http://hub", "model", "org/tiny", "main", draw(st.text(HEX, min_size=40, max_size=40)),
                      files)


def entry_of(listing: HubListing) -> ArchiveEntry:
    """The archive entry an honest host makes of that revision."""
    return ArchiveEntry("a.tar", listing.repo_id, listing.commit, ("main",),
                        tuple(FileRecord(p, f.blob, f.size) for p, f in listing.files.items()),
                        "0" * 64, 1, "none", "test", "")


def changed(listing: HubListing, data) -> tuple[HubListing, str]:
    """The listing with one thing changed (what an archive could differ in), and what was changed."""
    files = dict(listing.files)
    path = data.draw(st.sampled_from(sorted(files)))
    f = files[path]
    hexes = lambda n, old: st.text(HEX, min_size=n, max_size=n).filter(lambda x: x != old)  # noqa: E731
    what = data.draw(st.sampled_from(["commit", "path", "size", "blob", "gone", "added"]))
    commit = listing.commit
    if what == "commit":
        commit = data.draw(hexes(40, commit))
        path = "commit"
    elif what == "path":
        new = data.draw(st.from_regex(r"[a-z]{1,6}/x[0-9]", fullmatch=True).filter(lambda p: p not in files))
        files[new] = files.pop(path)
    elif what == "size":
        files[path] = ListedFile(data.draw(st.integers(0, 10**9).filter(lambda n: n != f.size)), f.oid, f.lfs)
    elif what == "blob" and f.lfs:  # an LFS file: its sha256
        files[path] = ListedFile(f.size, f.oid, data.draw(hexes(64, f.lfs)))
    elif what == "blob":  # any other: its git blob id
        files[path] = ListedFile(f.size, data.draw(hexes(40, f.oid)), None)
    elif what == "gone":
        del files[path]
    else:
        path = data.draw(st.from_regex(r"new/[a-z]{1,6}", fullmatch=True).filter(lambda p: p not in files))
        files[path] = f
    return HubListing(listing.endpoint, "model", listing.repo_id, "main", commit, files), path


@given(listings(), st.data())
@settings(max_examples=examples(ci=150, dev=40), deadline=None)
def test_any_single_change_to_the_listing_is_detected_and_named(listing, data):
    entry = entry_of(listing)
    assert disagreements(entry, listing) == []
    other, what = changed(listing, data)
    found = disagreements(entry, other)
    assert found and what in {d.path for d in found}


@given(st.lists(st.from_regex(r"[a-zA-Z.*?/\[\]\\-]{0,8}", fullmatch=True), max_size=3),
       st.lists(st.from_regex(r"[a-zA-Z.*?/\[\]\\-]{0,8}", fullmatch=True), max_size=3),
       st.lists(st.from_regex(r"[a-zA-Z.]{1,4}(/[a-zA-Z.]{1,4}){0,2}", fullmatch=True), max_size=8))
@settings(max_examples=examples(ci=200, dev=50), deadline=None)
def test_patterns_select_exactly_what_huggingface_hubs_download_selects(include, exclude, names):
    from huggingface_hub.utils import filter_repo_objects

    expected = list(filter_repo_objects(names, allow_patterns=include or None,
                                        ignore_patterns=exclude or None))
    assert [n for n in names if selected(n, tuple(include), tuple(exclude))] == expected


def test_a_revision_the_hub_does_not_have_is_a_disagreement_not_a_skip(honest):
    listing = ask_listing(honest.endpoint, "org/tiny", "main")
    entry = entry_of(listing)
    with pytest.raises(IntegrityError, match=r"commit differs.*no revision 'v9'"):
        check_entry(entry, honest.endpoint, "v9")


# ---------------------------------------------------------------------------- the manifest's format

def test_a_format_1_manifest_still_reads_and_format_2_round_trips(tmp_path):
    listing = HubListing("http://hub", "model", "org/tiny", "main", "c" * 40,
                         {"config.json": ListedFile(2, "a" * 40)})
    (tmp_path / "a.tar").write_bytes(b"x")
    old = entry_of(listing).to_dict()
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "edgetam-provision/1",
                                                        "archives": {"a.tar": old}}))
    [e] = read_manifest(tmp_path).values()
    assert e.hub is None and e.files == entry_of(listing).files
    check = HubCheck("http://hub", "2025-01-01T00:00:00+00:00", files=1)
    from dataclasses import replace

    record(tmp_path, [replace(e, hub=check)])
    assert read_manifest(tmp_path)["a.tar"].hub == check
    assert json.loads((tmp_path / "manifest.json").read_text())["format"] == "edgetam-provision/2"


@pytest.mark.parametrize("body", [
    {"format": "edgetam-provision/3", "archives": {}},
    {"format": "edgetam-provision/2", "archives": {"a.tar": {"hub": {"endpoint": 1, "at": ""}}}},
    {"format": "edgetam-provision/2",
     "archives": {"a.tar": {"hub": {"endpoint": "x", "at": "", "files": -1}}}},
])
def test_a_manifest_of_an_unknown_format_or_a_bad_hub_record_is_refused(tmp_path, body):
    listing = HubListing("http://hub", "model", "org/tiny", "main", "c" * 40, {"c": ListedFile(2, "a" * 40)})
    for entry in body["archives"].values():
        entry.update({k: v for k, v in entry_of(listing).to_dict().items() if k not in entry})
    (tmp_path / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(IntegrityError, match="not a valid manifest"):
        read_manifest(tmp_path)
