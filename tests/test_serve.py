"""`provision serve`: the verified cache as a read-only Hub endpoint, tried with real clients
(huggingface_hub 2.4 here, 0.36 in its own folder), hostile URLs, Range resumes, many clients, a
disk that changes under it. The app's answers without a server: test_serve_answers.py."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import MISSING_SERVE, run_cli, run_cli_process
from sshd import BOGUS_TOKEN, free_port

from edgetam_provision.hub.layout import repo_folder_name

pytest.importorskip("uvicorn", reason=MISSING_SERVE)

START_S = 20  # the longest a mirror may take to answer its first request


def http(url: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """The one HTTP helper: (status, headers with lower-case names, body), for any status."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@dataclass
class Mirror:
    """A `provision serve` process: its URL, the cache it serves, its log (stderr, in a file)."""

    proc: subprocess.Popen[str]
    url: str
    cache: Path
    log_file: Path

    def get(self, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        return http(self.url + path, headers, method)

    def log(self) -> str:
        return self.log_file.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send `sig`, wait for the exit: (exit code, stdout, log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=15)
        return self.proc.returncode, out, self.log()


def start_mirror(cache: Path, *args: str, host: str | None = None,
                 env: dict[str, str] | None = None) -> Mirror:
    """Start serving `cache`; returns once it answers HTTP (or fails with its log). A port free when
    chosen and taken before serve binds it (tests run in parallel) is chosen again."""
    for _ in range(3):
        port = free_port()
        log_file = cache.parent / f"{cache.name}-serve-{port}.log"
        argv = ["serve", "--cache-dir", str(cache), "--port", str(port), *(["--host", host] if host else [])]
        with open(log_file, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "edgetam_provision", *argv, *args],
                                    stdout=subprocess.PIPE, stderr=log, text=True,
                                    env={**os.environ, **(env or {})})
        mirror = Mirror(proc, f"http://127.0.0.1:{port}", cache, log_file)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                http(f"{mirror.url}/api/models/none/none")
                return mirror
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        if not re.search(rf"port {port} on \S+ is in use", mirror.log()):
            break
    raise RuntimeError(f"the mirror did not start: {mirror.log()}")


@pytest.fixture
def serve(source_cache, tmp_path):
    """start(*args, cache=None): a mirror on a fresh copy of the test cache (or on `cache`), stopped
    at the end of the test."""
    started: list[Mirror] = []

    def start(*args: str, cache: Path | None = None, host: str | None = None,
              env: dict[str, str] | None = None) -> Mirror:
        if cache is None:
            cache = tmp_path / f"served{len(started)}"
            shutil.copytree(source_cache, cache, symlinks=True)
        started.append(start_mirror(cache, *args, host=host, env=env))
        return started[-1]

    yield start
    for m in started:
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait()


@pytest.fixture(scope="module")
def mirror(source_cache, tmp_path_factory):
    """One mirror of org/tiny shared by the tests that only read from it."""
    cache = tmp_path_factory.mktemp("shared") / "served"
    shutil.copytree(source_cache, cache, symlinks=True)
    (cache.parent / "sentinel-outside.txt").write_text("SECRET-OUTSIDE-THE-CACHE")
    m = start_mirror(cache, "--repo", "org/tiny")
    yield m
    m.stop()


def client(url: str, code: str, cache: Path, *args: str, python: str = sys.executable,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `code` (sys.argv[1:] = `cache`, *args) in another Python whose HF_ENDPOINT is the mirror."""
    return subprocess.run([python, "-c", code, str(cache), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_ENDPOINT": url, **(env or {})})


def snapshot(cache: Path, repo: str = "org/tiny") -> Path:
    return next((cache / repo_folder_name(repo) / "snapshots").iterdir())


def blob_path(cache: Path, name: str) -> Path:
    return (snapshot(cache) / name).resolve()


# ---------------------------------------------------------------------------- real clients

def test_huggingface_hub_downloads_byte_identical_files(mirror, source_cache, tmp_path):
    code = ("import sys; from huggingface_hub import snapshot_download, hf_hub_download;"
            "print(snapshot_download('org/tiny', cache_dir=sys.argv[1]));"
            "print(hf_hub_download('org/tiny', 'sub/notes.txt', cache_dir=sys.argv[1] + '-2'))")
    res = client(mirror.url, code, tmp_path / "c")
    assert res.returncode == 0, res.stderr
    got, want = Path(res.stdout.split()[0]), snapshot(source_cache)
    assert all((got / p).read_bytes() == (want / p).read_bytes()
               for p in ("config.json", "model.safetensors", "sub/notes.txt"))
    assert Path(res.stdout.split()[1]).read_bytes() == b"nested file\n"
    assert run_cli("status", "--cache-dir", tmp_path / "c", "--backups", tmp_path).exit_code == 0


def test_stale_credentials_do_not_matter_and_are_never_logged(serve, tmp_path):
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(BOGUS_TOKEN)
    (home / ".netrc").write_text(f"machine 127.0.0.1 login stale password {BOGUS_TOKEN}\n")
    m = serve("--repo", "org/tiny")
    code = ("import sys; from huggingface_hub import snapshot_download;"
            "snapshot_download('org/tiny', cache_dir=sys.argv[1])")
    res = client(m.url, code, tmp_path / "c", env={"HOME": str(home), "HF_TOKEN": BOGUS_TOKEN})
    assert res.returncode == 0, res.stderr
    log = m.stop()[2]
    assert "GET /org/tiny/resolve/" in log and BOGUS_TOKEN not in log


def test_the_requests_based_hub_0_36_downloads_too(mirror, hub036_site, tmp_path):
    code = ("import sys, huggingface_hub as h; assert h.__version__.startswith('0.36');"
            "print(h.snapshot_download('org/tiny', cache_dir=sys.argv[1]))")
    res = client(mirror.url, code, tmp_path / "c", env={"PYTHONPATH": str(hub036_site)})
    assert res.returncode == 0, res.stderr
    assert (Path(res.stdout.strip()) / "sub" / "notes.txt").read_bytes() == b"nested file\n"


def test_provision_fetch_local_through_the_mirror(mirror, tmp_path):
    res = run_cli("fetch", "--local", "--endpoint", mirror.url, "--repo", "org/tiny", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.stderr
    assert run_cli("restore", tmp_path / "b", "--cache-dir", tmp_path / "c").exit_code == 0


def test_thirty_two_concurrent_clients_each_get_the_whole_repo(mirror, source_cache):
    want = {p: (snapshot(source_cache) / p).read_bytes() for p in ("config.json", "model.safetensors",
                                                                    "sub/notes.txt")}

    def one(_i: int) -> bool:
        return all(mirror.get(f"/org/tiny/resolve/main/{p}")[2] == data for p, data in want.items())

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(one, range(32)))


@pytest.mark.slow
def test_transformers_from_pretrained_through_the_mirror(serve, tmp_path):
    from edgetam_provision.verify.synthetic import build_model_files, install_into_cache

    cache = tmp_path / "served"
    install_into_cache(cache, "org/edgetam-standin", build_model_files())
    m = serve("--repo", "org/edgetam-standin", cache=cache)
    code = ("import sys; from transformers import EdgeTamModel;"
            "m = EdgeTamModel.from_pretrained('org/edgetam-standin', cache_dir=sys.argv[1]);"
            "print(sum(p.numel() for p in m.parameters()))")
    res = client(m.url, code, tmp_path / "c")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "9120641"


def test_all_public_serves_every_cached_revision_and_only_when_asked(serve):
    m = serve("--all-public")
    assert m.get("/org/other/resolve/main/config.json")[0] == 200
    assert m.get("/org/tiny/resolve/main/config.json")[0] == 200
    assert run_cli("serve", "--all-public", "--repo", "org/tiny", "--cache-dir", m.cache).exit_code == 2


# ---------------------------------------------------------------------------- revisions and query strings

@pytest.fixture
def two_revisions(tmp_path) -> dict[str, Any]:
    """org/rev with main (A) and a branch v2 (B, one more file, in a subfolder), laid by hand."""
    from edgetam_provision.verify.synthetic import install_into_cache

    cache = tmp_path / "revs"
    a = install_into_cache(cache, "org/rev", {"config.json": b'{"v": 1}', "model.safetensors": b"A" * 3000})
    b = install_into_cache(cache, "org/rev", {"config.json": b'{"v": 2}', "model.safetensors": b"B" * 3000,
                                              "extra/deep/notes.txt": b"only in v2\n"})
    refs = cache / repo_folder_name("org/rev") / "refs"
    (refs / "main").write_text(a)
    (refs / "v2").write_text(b)
    return {"cache": cache, "main": a, "v2": b}


def test_huggingface_hub_lists_and_downloads_the_revision_it_asks_for(serve, two_revisions, tmp_path):
    m = serve("--all-public", cache=two_revisions["cache"])
    a, b = two_revisions["main"], two_revisions["v2"]
    code = ("import sys, json; from huggingface_hub import HfApi, snapshot_download; api = HfApi();"
            "out = {rev: [sorted(api.list_repo_files('org/rev', revision=rev)),"
            "             api.model_info('org/rev', revision=rev).sha,"
            "             sorted(f.path for f in api.list_repo_tree('org/rev', revision=rev))]"
            f"       for rev in ('main', 'v2', {a!r}, {b!r})}};"
            "out['v2-files'] = open(snapshot_download('org/rev', revision='v2', cache_dir=sys.argv[1])"
            "                      + '/config.json').read();"
            "print(json.dumps(out))")
    res = client(m.url, code, tmp_path / "c")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for rev, commit in (("main", a), ("v2", b), (a, a), (b, b)):
        files = ["config.json", "model.safetensors"] + (["extra/deep/notes.txt"] if commit == b else [])
        top = ["config.json", "model.safetensors"] + (["extra"] if commit == b else [])
        assert out[rev] == [sorted(files), commit, sorted(top)], rev
    assert out["v2-files"] == '{"v": 2}'
    assert json.loads(m.get("/api/models/org/rev?revision=v2")[2])["sha"] == b
    listed = json.loads(m.get(f"/api/models/org/rev/tree?revision={b}&recursive=true")[2])
    assert "extra/deep/notes.txt" in [e["path"] for e in listed]
    assert m.get("/api/models/org/rev?revision=nope")[0] == 404


def test_huggingface_hubs_own_cache_verify_agrees_with_every_listed_oid(serve, two_revisions, tmp_path):
    """`hf cache verify` checks each downloaded file against the tree's oids (git blob ids, LFS
    sha256): the listing serve computes is the Hub's."""
    m = serve("--all-public", cache=two_revisions["cache"])
    code = ("import sys; from huggingface_hub import snapshot_download;"
            "snapshot_download('org/rev', revision='v2', cache_dir=sys.argv[1])")
    assert client(m.url, code, tmp_path / "c").returncode == 0
    hf = Path(sys.executable).parent / "hf"
    res = subprocess.run([str(hf), "cache", "verify", "org/rev", "--revision", "v2", "--cache-dir",
                          str(tmp_path / "c"), "--fail-on-missing-files", "--fail-on-extra-files"],
                         capture_output=True, text=True, env={**os.environ, "HF_ENDPOINT": m.url})
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------------ names: what is listed can be served

ODD_BUT_VALID = {"config.json": b"{}", "odd name #1 ?%&+;=@'[ü日本🙂].txt": b"odd\n", "a%2Fb.txt": b"pct\n",
                 "dir with space/x y.txt": b"spaced\n", "-dash/~tilde.bin": b"\x00\x01"}


BAD_NAMES = ["bad\u2028line.txt", "bidi\u202eexe.txt", "ideographic\u3000space.txt"]


def test_snapshot_download_gets_every_listed_name_and_a_revision_it_cannot_serve_is_not_listed(
        serve, tmp_path):
    """One mirror, one client: org/odd downloads whole; each org/bad-N, holding one name restore
    refuses too, is not listed and does not download."""
    from edgetam_provision.verify.synthetic import install_into_cache

    cache = tmp_path / "names"
    install_into_cache(cache, "org/odd", ODD_BUT_VALID)
    bad = {f"org/bad-{i}": name for i, name in enumerate(BAD_NAMES)}
    for repo, name in bad.items():
        install_into_cache(cache, repo, {"config.json": b"{}", name: b"refused by restore too\n"})
    m = serve("--repo", "org/odd", *[a for repo in bad for a in ("--repo", repo)], cache=cache)
    code = ("import json, sys; from huggingface_hub import snapshot_download\n"
            "def get(repo):\n"
            "    try:\n"
            "        return snapshot_download(repo, cache_dir=sys.argv[1])\n"
            "    except Exception:\n"
            "        return None\n"
            "print(json.dumps({repo: get(repo) for repo in sys.argv[2:]}))")
    res = client(m.url, code, tmp_path / "c", "org/odd", *bad)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert {p: (Path(got["org/odd"]) / p).read_bytes() for p in ODD_BUT_VALID} == ODD_BUT_VALID
    for repo, name in bad.items():
        status, _, body = m.get(f"/api/models/{repo}/tree/main?recursive=true")
        assert status == 503 and b"control, invisible or separator" in body, name  # path_problem's words
        assert got[repo] is None, name
        assert not list((tmp_path / "c").glob(f"{repo_folder_name(repo)}/snapshots/*/*")), name


# ------------------------------------------------------------------------ HTTP: Range, hostile URLs, methods

def test_range_requests_resume_a_cut_download(mirror, source_cache):
    data = (snapshot(source_cache) / "model.safetensors").read_bytes()
    status, headers, body = mirror.get("/org/tiny/resolve/main/model.safetensors", {"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:]
    assert headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    status, headers, _ = mirror.get("/org/tiny/resolve/main/model.safetensors", method="HEAD")
    assert status == 200 and headers["x-linked-size"] == str(len(data))
    assert headers["x-linked-etag"].strip('"') == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("header", "status", "span"), [
    ("bytes=--5", 200, None), ("bytes=-0", 416, None), ("bytes=abc", 200, None), ("bytes=5-2", 200, None),
    ("bytes=0-9", 206, (0, 10)), ("bytes=-10", 206, (-10, None)), ("bytes=99999999-", 416, None),
    ("items=0-5", 200, None), ("bytes=0-1,4-5", 200, None), ("bytes= 3-", 206, (3, None)),
    ("bytes=" + "9" * 5000 + "-", 416, None), ("bytes=0-" + "9" * 5000, 200, None),
    ("bytes=-" + "9" * 5000, 200, None), ("bytes=" + "0" * 5000 + "2-", 206, (2, None)),
])
def test_range_headers_follow_rfc_9110_whatever_the_length_of_their_numbers(mirror, source_cache, header,
                                                                             status, span):
    whole = (snapshot(source_cache) / "config.json").read_bytes()
    got, headers, body = mirror.get("/org/tiny/resolve/main/config.json", {"Range": header})
    assert got == status
    if status == 200:
        assert body == whole
    elif status == 206:
        assert body == whole[span[0]:span[1]]
        assert int(headers["content-length"]) == len(body) > 0
    else:
        assert headers["content-range"] == f"bytes */{len(whole)}"
    assert "Traceback" not in mirror.log()


@pytest.mark.parametrize("path", [
    "/org/tiny/resolve/main/../../../sentinel-outside.txt",
    "/org/tiny/resolve/main/%2e%2e/%2e%2e/sentinel-outside.txt",
    "/org/tiny/resolve/main/..%2f..%2f..%2fsentinel-outside.txt", "/org/tiny/resolve/main//etc/passwd",
    "/org/tiny/resolve/main/%00", "/org/tiny/resolve/main/" + "a" * 5000, "/api/models/org/tiny/tree/..%2f..",
    "/org/tiny/resolve/main/sub%2f..%2f..%2f..%2fsentinel-outside.txt", "/%2e%2e/%2e%2e/sentinel-outside.txt",
    "/org/other/resolve/main/config.json", "/api/models/org/other/revision/main",
    "/org/tiny/resolve/main/%ff", "/api/models/org/tiny?revision=%ff", "/api/models/org/tiny?" + "a=1&" * 100,
])
def test_hostile_and_unlisted_urls_get_4xx_and_nothing_outside(mirror, path):
    status, _headers, body = mirror.get(path)
    assert 400 <= status < 500 and b"SECRET-OUTSIDE" not in body
    assert "Traceback" not in mirror.log()


@pytest.mark.parametrize("path", ["/api/models/org/tiny/revision/%250d%250aX-Evil:1",
                                  "/api/models/org/tiny/revision/%2500", "/org/tiny/resolve/%250d%250a/x",
                                  "/api/models/org/tiny?revision=%0d%0aX-Evil:1"])
def test_a_url_is_decoded_once_and_nothing_reaches_a_header(mirror, path):
    status, headers, _ = mirror.get(path)
    assert 400 <= status < 500 and "x-evil" not in headers


def test_writes_are_refused(mirror):
    assert mirror.get("/org/tiny/resolve/main/config.json", method="PUT")[0] == 405
    assert mirror.get("/api/models/org/tiny", method="DELETE")[0] == 405


def test_status_shows_what_a_running_mirror_serves(mirror, tmp_path):
    data = json.loads(run_cli("status", "--cache-dir", mirror.cache, "--backups", tmp_path, "--quick",
                              "--json").stdout)
    assert data["mirror"]["url"] == mirror.url
    assert [r["repo_id"] for r in data["mirror"]["repos"]] == ["org/tiny"]


def test_an_empty_file_is_served_whole(serve, tmp_path):
    from edgetam_provision.verify.synthetic import install_into_cache

    cache = tmp_path / "c"
    install_into_cache(cache, "org/empty", {"empty.txt": b"", "config.json": b"{}"})
    m = serve("--repo", "org/empty", cache=cache)
    status, headers, body = m.get("/org/empty/resolve/main/empty.txt")
    assert status == 200 and body == b"" and headers["content-length"] == "0"
    assert "without completing" not in m.stop()[2]


# ---------------------------------------------------------------------------- a damaged disk, and its repair

def test_a_damaged_blob_answers_503_and_is_named(serve):
    m = serve("--repo", "org/tiny")
    blob = blob_path(m.cache, "model.safetensors")
    blob.write_bytes(blob.read_bytes()[:-10])  # damaged after start: caught by the size check
    status, _h, body = m.get("/org/tiny/resolve/main/model.safetensors")
    assert status == 503 and b"damaged" in body
    assert m.get("/api/models/org/tiny/revision/main")[0] == 503
    assert "NOT serving org/tiny" in m.stop()[2]


def test_a_revision_damaged_before_start_is_not_served(serve, source_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(source_cache, cache, symlinks=True)
    blob = blob_path(cache, "model.safetensors")
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, wrong bytes: the start-up hash sees it
    m = serve("--repo", "org/tiny", cache=cache)
    assert m.get("/org/tiny/resolve/main/config.json")[0] == 503
    log = m.stop()[2]
    assert "NOT serving org/tiny" in log and "does not match its hash" in log


@pytest.mark.parametrize("when", ["before start", "after start"])
def test_a_repair_by_restore_is_served_without_a_restart(serve, source_cache, tmp_path, when):
    assert run_cli("backup", "org/tiny", "--out", tmp_path / "b", "--cache-dir", source_cache).exit_code == 0
    cache = tmp_path / "cache"
    shutil.copytree(source_cache, cache, symlinks=True)
    blob = blob_path(cache, "model.safetensors")
    good = blob.read_bytes()
    if when == "before start":
        blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    m = serve("--repo", "org/tiny", cache=cache)
    if when == "after start":
        blob.write_bytes(good[:100])
    assert m.get("/org/tiny/resolve/main/model.safetensors")[0] == 503
    assert m.get("/org/tiny/resolve/main/config.json")[0] == 503  # nothing else of the revision is trusted
    res = run_cli("restore", tmp_path / "b", "--cache-dir", cache)
    assert res.exit_code == 0, res.stderr
    status, _, body = m.get("/org/tiny/resolve/main/model.safetensors")
    assert status == 200 and body == good
    assert "serving it again" in m.log()
    assert json.loads(run_cli("status", "--cache-dir", cache, "--backups", tmp_path, "--quick",
                              "--json").stdout)["mirror"]["repos"][0]["damaged"] == {}


def test_a_snapshot_folder_linked_elsewhere_is_not_served_from_elsewhere(serve, source_cache, tmp_path):
    cache = tmp_path / "c"
    shutil.copytree(source_cache, cache, symlinks=True)
    snap = snapshot(cache)
    outside = tmp_path / "outside" / "a" / "b"
    (outside.parent.parent / "blobs").mkdir(parents=True)
    shutil.copytree(snap, outside, symlinks=True)  # same relative links, which now read ../../blobs there
    for f in snap.rglob("*"):
        if f.is_symlink():
            (outside.parent.parent / "blobs" / Path(os.readlink(f)).name).write_bytes(b"EVIL" * 10)
    shutil.rmtree(snap)
    snap.symlink_to(outside)
    res = run_cli("status", "--cache-dir", cache, "--backups", tmp_path)
    assert res.exit_code != 0 and "is a link" in res.stdout + res.stderr
    m = serve("--repo", "org/tiny", cache=cache)
    status, _, body = m.get("/org/tiny/resolve/main/config.json")
    assert b"EVIL" not in body and status == 503


@pytest.mark.slow
def test_a_blob_rewritten_with_the_same_size_is_never_served_as_genuine(serve, tmp_path):
    m = serve("--repo", "org/tiny")
    blob = blob_path(m.cache, "model.safetensors")
    st = blob.stat()
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back; the ctime cannot be
    status, _, body = m.get("/org/tiny/resolve/main/model.safetensors")
    assert status == 503 and b"changed since the mirror started" in body
    code = ("import sys; from huggingface_hub import hf_hub_download;"
            "hf_hub_download('org/tiny', 'model.safetensors', cache_dir=sys.argv[1])")
    assert client(m.url, code, tmp_path / "client").returncode != 0
    stored = [b for b in (tmp_path / "client").rglob("blobs/*") if len(b.name) == 64]
    assert all(hashlib.sha256(b.read_bytes()).hexdigest() == b.name for b in stored)


def special_file(path: Path, kind: str) -> None:
    """Put a FIFO, or a character device that reads zeros forever, at `path`."""
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers


@pytest.mark.parametrize("kind", ["fifo", pytest.param("device", marks=pytest.mark.skipif(
    os.geteuid() != 0, reason="making a device file needs root"))])
@pytest.mark.parametrize("where", ["in the snapshot", "as a blob", "as refs/main", "as the mirror's state"])
def test_a_special_file_in_the_cache_never_blocks_status_or_serve(serve, source_cache, tmp_path, kind, where):
    cache = tmp_path / "cache"
    shutil.copytree(source_cache, cache, symlinks=True)
    repo = cache / repo_folder_name("org/tiny")
    target = {"in the snapshot": snapshot(cache) / "special", "as a blob": blob_path(cache, "config.json"),
              "as refs/main": repo / "refs" / "main",
              "as the mirror's state": cache / ".locks" / "provision-serve.json"}[where]
    target.parent.mkdir(exist_ok=True)
    special_file(target, kind)
    res = run_cli_process("status", "--cache-dir", cache, "--backups", tmp_path, "--json", timeout=20)
    damaged = where in ("in the snapshot", "as a blob")
    assert res.returncode == (1 if damaged else 0), res.stderr
    m = serve("--repo", "org/tiny", cache=cache)  # it starts: start_mirror fails after START_S otherwise
    commit = snapshot(cache).name
    assert m.get(f"/org/tiny/resolve/{commit}/config.json")[0] == (503 if damaged else 200)
    assert m.get("/org/tiny/resolve/main/config.json")[0] == {"as refs/main": 404}.get(where, 503 if damaged
                                                                                           else 200)
    if where == "in the snapshot":
        assert "special: not a regular file" in m.log()


# ---------------------------------------------------------------------------- a hostile LAN

def test_idle_connections_never_lock_real_clients_out_and_are_closed(serve):
    import socket

    m = serve("--repo", "org/tiny", "--idle-timeout", "1")
    port = int(m.url.rsplit(":", 1)[1])
    idle = []
    try:
        for _ in range(300):  # more than the server's whole connection limit, from one other address
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            with contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
            idle.append(s)
        status, _, body = m.get("/org/tiny/resolve/main/config.json")
        assert status == 200 and b"seed" in body  # a real client is served meanwhile
        for s in idle[:40]:  # each is closed by the server once silent past --idle-timeout
            s.settimeout(15)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(1) == b""
    finally:
        for s in idle:
            s.close()


# ---------------------------------------------------------------------------- what it says, how it stops

def test_on_loopback_it_says_this_machine_only_and_how_to_offer_it_to_the_lan(serve):
    m = serve("--repo", "org/tiny")
    log = m.stop()[2]
    assert f"mirror on {m.url}, reachable from this machine only" in log
    assert "--host 0.0.0.0" in log and "on the other machines" not in log and "WARNING" not in log


def test_binding_beyond_loopback_says_so_loudly_and_names_addresses_others_can_use(serve):
    from edgetam_provision.serve.run import reachable_addresses

    m = serve("--repo", "org/tiny", host="0.0.0.0")
    log = m.stop()[2]
    assert "WARNING: serving on 0.0.0.0" in log and "on the other machines" in log
    assert "0.0.0.0" not in reachable_addresses("0.0.0.0")
    assert reachable_addresses("192.168.1.5") == ["192.168.1.5"]


def test_json_says_where_it_serves_in_one_line_at_start_and_what_it_served_at_the_end(serve):
    from huggingface_hub import scan_cache_dir

    m = serve("--repo", "org/tiny", "--json")
    ready, _, _ = select.select([m.proc.stdout], [], [], START_S)  # a script reads it while the mirror runs
    assert ready, "no line on stdout while it serves"
    start = json.loads(m.proc.stdout.readline())
    assert start["url"] == m.url and start["host"] == "127.0.0.1"
    assert start["port"] == int(m.url.rsplit(":", 1)[1])
    assert [r["repo_id"] for r in start["repos"]] == ["org/tiny"] and start["loopback_only"] is True
    assert scan_cache_dir(m.cache).warnings == []  # its state file stays out of huggingface_hub's sight
    assert list(m.cache.glob(".locks/provision-serve.json"))
    m.get("/org/tiny/resolve/main/config.json")
    code, out, log = m.stop(signal.SIGTERM)
    assert code == 0, log
    end = json.loads(out)
    assert end["ok"] is True and end["requests"] >= 1 and end["stopped_by"] == "SIGTERM"
    assert not list(m.cache.rglob("*provision-serve*"))


def test_ctrl_c_stops_it_with_a_summary_and_the_interrupted_exit_code(serve):
    from edgetam_provision.errors import Interrupted

    m = serve("--repo", "org/tiny")
    m.get("/org/tiny/resolve/main/config.json")
    code, out, log = m.stop(signal.SIGINT)
    assert code == Interrupted.exit_code == 130 and "error:" not in log, log
    assert "stopped (Ctrl-C) after" in out and "requests" in out
    assert not list(m.cache.rglob("*provision-serve*"))


def test_a_port_in_use_is_one_clear_error_before_anything_is_said(mirror, source_cache):
    port = mirror.url.rsplit(":", 1)[1]
    res = run_cli("serve", "--cache-dir", source_cache, "--port", port, "--repo", "org/tiny")
    assert res.exit_code == 2 and f"port {port} on 127.0.0.1 is in use" in res.stderr
    assert "mirror on" not in res.stderr and "Errno" not in res.stderr
