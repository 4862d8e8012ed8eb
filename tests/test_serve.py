"""`provision serve`: the verified cache as a read-only Hub endpoint, tried with real clients
(huggingface_hub 2.4 here, 0.36 in its own folder), hostile URLs, Range resumes, many clients."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import MISSING_SERVE, run_cli
from sshd import BOGUS_TOKEN, free_port

from edgetam_provision.hub.layout import repo_folder_name

pytest.importorskip("uvicorn", reason=MISSING_SERVE)


def start_mirror(cache: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgetam_provision", "serve", "--cache-dir", str(cache),
                             "--port", str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/models/none/none", timeout=1)
        except urllib.error.HTTPError:
            return proc, url  # it answers
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read()) from None
            time.sleep(0.1)
    raise RuntimeError("the mirror did not start")


@pytest.fixture(scope="module")
def mirror(source_cache, tmp_path_factory):
    cache = tmp_path_factory.mktemp("served")
    shutil.copytree(source_cache, cache, dirs_exist_ok=True, symlinks=True)
    sentinel = cache.parent / "sentinel-outside.txt"
    sentinel.write_text("SECRET-OUTSIDE-THE-CACHE")
    proc, url = start_mirror(cache, "--repo", "org/tiny")
    yield {"cache": cache, "url": url, "proc": proc, "sentinel": sentinel}
    proc.terminate()
    proc.wait(timeout=10)


def client(url: str, code: str, cache: Path, python: str = sys.executable, env: dict[str, str] | None = None):
    return subprocess.run([python, "-c", code, str(cache)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_ENDPOINT": url, **(env or {})})


def same_bytes(a: Path, b: Path) -> bool:
    return all((a / p).read_bytes() == (b / p).read_bytes()
               for p in ("config.json", "model.safetensors", "sub/notes.txt"))


def test_huggingface_hub_downloads_byte_identical_files(mirror, source_cache, tmp_path):
    code = ("import sys; from huggingface_hub import snapshot_download, hf_hub_download;"
            "print(snapshot_download('org/tiny', cache_dir=sys.argv[1]));"
            "print(hf_hub_download('org/tiny', 'sub/notes.txt', cache_dir=sys.argv[1] + '-2'))")
    res = client(mirror["url"], code, tmp_path / "c")
    assert res.returncode == 0, res.stderr
    got = Path(res.stdout.split()[0])
    assert same_bytes(got, next((source_cache / repo_folder_name("org/tiny") / "snapshots").iterdir()))
    assert Path(res.stdout.split()[1]).read_bytes() == b"nested file\n"
    assert run_cli("status", "--cache-dir", tmp_path / "c", "--backups", tmp_path).exit_code == 0


def test_stale_credentials_do_not_matter_and_are_never_logged(source_cache, tmp_path):
    cache = tmp_path / "served"
    shutil.copytree(source_cache, cache, symlinks=True)
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(BOGUS_TOKEN)
    (home / ".netrc").write_text(f"machine 127.0.0.1 login stale password {BOGUS_TOKEN}\n")
    proc, url = start_mirror(cache, "--repo", "org/tiny")
    try:
        code = ("import sys; from huggingface_hub import snapshot_download;"
                "snapshot_download('org/tiny', cache_dir=sys.argv[1])")
        res = client(url, code, tmp_path / "c", env={"HOME": str(home), "HF_TOKEN": BOGUS_TOKEN})
    finally:
        proc.terminate()
        _out, log = proc.communicate(timeout=10)
    assert res.returncode == 0, res.stderr
    assert "GET /org/tiny/resolve/" in log and BOGUS_TOKEN not in log


def test_the_requests_based_hub_0_36_downloads_too(mirror, hub036_site, tmp_path):
    site = hub036_site
    code = ("import sys, huggingface_hub as h; assert h.__version__.startswith('0.36');"
            "print(h.snapshot_download('org/tiny', cache_dir=sys.argv[1]))")
    res = client(mirror["url"], code, tmp_path / "c", env={"PYTHONPATH": str(site)})
    assert res.returncode == 0, res.stderr
    assert (Path(res.stdout.strip()) / "sub" / "notes.txt").read_bytes() == b"nested file\n"


def test_provision_fetch_local_through_the_mirror(mirror, tmp_path):
    res = run_cli("fetch", "--local", "--endpoint", mirror["url"], "--repo", "org/tiny",
                  "--out", tmp_path / "b")
    assert res.exit_code == 0, res.stderr
    assert run_cli("restore", tmp_path / "b", "--cache-dir", tmp_path / "c").exit_code == 0


def http(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any, bytes]:
    """(status, headers (case-insensitive), body)."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_range_requests_resume_a_cut_download(mirror, source_cache):
    snap = next((source_cache / repo_folder_name("org/tiny") / "snapshots").iterdir())
    data = (snap / "model.safetensors").read_bytes()
    status, headers, body = http(f"{mirror['url']}/org/tiny/resolve/main/model.safetensors",
                                 {"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:]
    assert headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    status, headers, _ = http(f"{mirror['url']}/org/tiny/resolve/main/model.safetensors", method="HEAD")
    assert status == 200 and headers["X-Linked-Size"] == str(len(data))
    assert headers["X-Linked-Etag"].strip('"') == hashlib.sha256(data).hexdigest()
    far = {"Range": "bytes=99999999-"}
    assert http(f"{mirror['url']}/org/tiny/resolve/main/model.safetensors", far)[0] == 416


def test_thirty_two_concurrent_clients_each_get_the_whole_repo(mirror, source_cache):
    snap = next((source_cache / repo_folder_name("org/tiny") / "snapshots").iterdir())
    want = {p: (snap / p).read_bytes() for p in ("config.json", "model.safetensors", "sub/notes.txt")}

    def one(_i: int) -> bool:
        return all(http(f"{mirror['url']}/org/tiny/resolve/main/{p}")[2] == data for p, data in want.items())

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(one, range(32)))


@pytest.mark.parametrize("path", [
    "/org/tiny/resolve/main/../../../sentinel-outside.txt",
    "/org/tiny/resolve/main/%2e%2e/%2e%2e/sentinel-outside.txt",
    "/org/tiny/resolve/main/..%2f..%2f..%2fsentinel-outside.txt", "/org/tiny/resolve/main//etc/passwd",
    "/org/tiny/resolve/main/%00", "/org/tiny/resolve/main/" + "a" * 5000, "/api/models/org/tiny/tree/..%2f..",
    "/org/tiny/resolve/main/sub%2f..%2f..%2f..%2fsentinel-outside.txt", "/%2e%2e/%2e%2e/sentinel-outside.txt",
    "/org/other/resolve/main/config.json", "/api/models/org/other/revision/main",
])
def test_hostile_and_unlisted_urls_get_4xx_and_nothing_outside(mirror, path):
    status, _headers, body = http(mirror["url"] + path)
    assert 400 <= status < 500 and b"SECRET-OUTSIDE" not in body


def test_writes_are_refused(mirror):
    assert http(f"{mirror['url']}/org/tiny/resolve/main/config.json", method="PUT")[0] == 405
    assert http(f"{mirror['url']}/api/models/org/tiny", method="DELETE")[0] == 405


def test_status_shows_what_a_running_mirror_serves(mirror, tmp_path):
    data = json.loads(run_cli("status", "--cache-dir", mirror["cache"], "--backups", tmp_path, "--quick",
                              "--json").stdout)
    assert data["mirror"]["url"] == mirror["url"]
    assert [r["repo_id"] for r in data["mirror"]["repos"]] == ["org/tiny"]


def test_a_damaged_blob_answers_503_and_is_named(source_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(source_cache, cache, symlinks=True)
    proc, url = start_mirror(cache, "--repo", "org/tiny")
    try:
        blobs = cache / repo_folder_name("org/tiny") / "blobs"
        blob = next(p for p in blobs.iterdir() if len(p.name) == 64)
        blob.write_bytes(blob.read_bytes()[:-10])  # damaged after start: caught by the size check
        status, _h, body = http(f"{url}/org/tiny/resolve/main/model.safetensors")
        assert status == 503 and b"damaged" in body
        assert http(f"{url}/api/models/org/tiny/revision/main")[0] == 503
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert "NOT serving org/tiny" in err


def test_a_revision_damaged_before_start_is_not_served(source_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(source_cache, cache, symlinks=True)
    blob = next(p for p in (cache / repo_folder_name("org/tiny") / "blobs").iterdir() if len(p.name) == 64)
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, wrong bytes: the start-up hash sees it
    proc, url = start_mirror(cache, "--repo", "org/tiny")
    try:
        assert http(f"{url}/org/tiny/resolve/main/config.json")[0] == 503
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert "NOT serving org/tiny" in err and "does not match its hash" in err


def test_binding_beyond_loopback_says_so_loudly(source_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(source_cache, cache, symlinks=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgetam_provision", "serve", "--cache-dir", str(cache),
                             "--host", "0.0.0.0", "--port", str(port), "--repo", "org/tiny"],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.terminate()
    _out, err = proc.communicate(timeout=10)
    assert "WARNING: serving on 0.0.0.0" in err


@pytest.mark.slow
def test_transformers_from_pretrained_through_the_mirror(tmp_path):
    from edgetam_provision.verify.synthetic import build_model_files, install_into_cache

    cache = tmp_path / "served"
    install_into_cache(cache, "org/edgetam-standin", build_model_files())
    proc, url = start_mirror(cache, "--repo", "org/edgetam-standin")
    try:
        code = ("import sys; from transformers import EdgeTamModel;"
                "m = EdgeTamModel.from_pretrained('org/edgetam-standin', cache_dir=sys.argv[1]);"
                "print(sum(p.numel() for p in m.parameters()))")
        res = client(url, code, tmp_path / "c")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "9120641"


def test_all_public_serves_every_cached_revision_and_only_when_asked(source_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(source_cache, cache, symlinks=True)
    proc, url = start_mirror(cache, "--all-public")
    try:
        assert http(f"{url}/org/other/resolve/main/config.json")[0] == 200
        assert http(f"{url}/org/tiny/resolve/main/config.json")[0] == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert run_cli("serve", "--all-public", "--repo", "org/tiny", "--cache-dir", cache).exit_code == 2


# ---------------------------------------------------------------------------- a hostile LAN, a hostile disk

def blob_path(cache: Path, name: str) -> Path:
    snap = next((cache / repo_folder_name("org/tiny") / "snapshots").iterdir())
    return (snap / name).resolve()


def fetch_url(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_idle_connections_never_lock_real_clients_out_and_are_closed(source_cache, tmp_path):
    import socket

    cache = tmp_path / "c"
    shutil.copytree(source_cache, cache, symlinks=True)
    proc, url = start_mirror(cache, "--repo", "org/tiny", "--idle-timeout", "1")
    port = int(url.rsplit(":", 1)[1])
    idle = []
    try:
        for _ in range(300):  # more than the server's whole connection limit, from one other address
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            with contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
            idle.append(s)
        status, _, body = fetch_url(url, "/org/tiny/resolve/main/config.json")
        assert status == 200 and b"seed" in body  # a real client is served meanwhile
        time.sleep(2)  # past --idle-timeout: every silent connection was closed by the server
        for s in idle[:40]:
            s.settimeout(2)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(1) == b""
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_a_snapshot_folder_linked_elsewhere_is_not_served_from_elsewhere(source_cache, tmp_path):
    cache = tmp_path / "c"
    shutil.copytree(source_cache, cache, symlinks=True)
    snaps = cache / repo_folder_name("org/tiny") / "snapshots"
    snap = next(snaps.iterdir())
    outside = tmp_path / "outside" / "a" / "b"
    (outside.parent.parent / "blobs").mkdir(parents=True)
    shutil.copytree(snap, outside, symlinks=True)  # same relative links, which now read ../../blobs there
    for link in (outside.parent.parent / "blobs", ):
        for f in snap.rglob("*"):
            if f.is_symlink():
                (link / Path(os.readlink(f)).name).write_bytes(b"EVIL" * 10)
    shutil.rmtree(snap)
    snap.symlink_to(outside)
    res = run_cli("status", "--cache-dir", cache, "--backups", tmp_path)
    assert res.exit_code != 0 and "is a link" in res.stdout + res.stderr
    proc, url = start_mirror(cache, "--repo", "org/tiny")
    try:
        status, _, body = fetch_url(url, "/org/tiny/resolve/main/config.json")
        assert b"EVIL" not in body and status == 503
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_a_blob_rewritten_with_the_same_size_is_never_served_as_genuine(source_cache, tmp_path):
    cache = tmp_path / "c"
    shutil.copytree(source_cache, cache, symlinks=True)
    proc, url = start_mirror(cache, "--repo", "org/tiny")
    try:
        blob = blob_path(cache, "model.safetensors")
        st = blob.stat()
        data = bytearray(blob.read_bytes())
        data[1000] ^= 0xFF
        blob.write_bytes(bytes(data))
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back; the ctime cannot be
        status, _, body = fetch_url(url, "/org/tiny/resolve/main/model.safetensors")
        assert status == 503 and b"changed since the mirror started" in body
        code = ("import sys; from huggingface_hub import hf_hub_download;"
                "hf_hub_download('org/tiny', 'model.safetensors', cache_dir=sys.argv[1])")
        assert client(url, code, tmp_path / "client").returncode != 0
        stored = [b for b in (tmp_path / "client").rglob("blobs/*") if len(b.name) == 64]
        assert all(hashlib.sha256(b.read_bytes()).hexdigest() == b.name for b in stored)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(("header", "status", "span"), [
    ("bytes=--5", 200, None), ("bytes=-0", 416, None), ("bytes=abc", 200, None), ("bytes=5-2", 200, None),
    ("bytes=0-9", 206, (0, 10)), ("bytes=-10", 206, (-10, None)), ("bytes=99999999-", 416, None),
    ("items=0-5", 200, None), ("bytes=0-1,4-5", 200, None), ("bytes= 3-", 206, (3, None)),
])
def test_range_headers_follow_rfc_9110(mirror, source_cache, header, status, span):
    whole = (next((source_cache / repo_folder_name("org/tiny") / "snapshots").iterdir())
             / "config.json").read_bytes()
    got, headers, body = fetch_url(mirror["url"], "/org/tiny/resolve/main/config.json", {"Range": header})
    assert got == status
    if status == 200:
        assert body == whole
    elif status == 206:
        assert body == whole[span[0]:span[1]]
        assert int(headers["content-length"]) == len(body) > 0
    else:
        assert headers["content-range"] == f"bytes */{len(whole)}"


def test_an_empty_file_is_served_whole(source_cache, tmp_path):
    from edgetam_provision.verify.synthetic import install_into_cache

    cache = tmp_path / "c"
    install_into_cache(cache, "org/empty", {"empty.txt": b"", "config.json": b"{}"})
    proc, url = start_mirror(cache, "--repo", "org/empty")
    try:
        status, headers, body = fetch_url(url, "/org/empty/resolve/main/empty.txt")
        assert status == 200 and body == b"" and headers["content-length"] == "0"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "without completing" not in err


@pytest.mark.parametrize("path", ["/api/models/org/tiny/revision/%250d%250aX-Evil:1",
                                  "/api/models/org/tiny/revision/%2500", "/org/tiny/resolve/%250d%250a/x"])
def test_a_url_is_decoded_once_and_nothing_reaches_a_header(mirror, path):
    status, headers, _ = fetch_url(mirror["url"], path)
    assert 400 <= status < 500 and "x-evil" not in headers


def test_sigterm_stops_the_mirror_cleanly_and_its_files_stay_out_of_huggingface_hubs_sight(source_cache,
                                                                                           tmp_path):
    import signal

    from huggingface_hub import scan_cache_dir

    cache = tmp_path / "c"
    shutil.copytree(source_cache, cache, symlinks=True)
    proc, url = start_mirror(cache, "--repo", "org/tiny", "--json")
    assert scan_cache_dir(cache).warnings == []  # while it runs
    assert list(cache.glob(".locks/provision-serve.json"))
    fetch_url(url, "/org/tiny/resolve/main/config.json")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["ok"] is True and data["requests"] >= 1
    assert not list(cache.rglob("*provision-serve*"))


def test_ctrl_c_is_a_normal_stop_with_a_summary(source_cache, tmp_path):
    import signal

    cache = tmp_path / "c"
    shutil.copytree(source_cache, cache, symlinks=True)
    proc, url = start_mirror(cache, "--repo", "org/tiny")
    fetch_url(url, "/org/tiny/resolve/main/config.json")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "error" not in err, err
    assert "stopped after" in out and "requests" in out


def test_a_port_in_use_is_one_clear_error_before_anything_is_said(mirror, source_cache):
    port = mirror["url"].rsplit(":", 1)[1]
    res = run_cli("serve", "--cache-dir", source_cache, "--port", port, "--repo", "org/tiny")
    assert res.exit_code == 2 and f"port {port} on 127.0.0.1 is in use" in res.stderr
    assert "mirror on" not in res.stderr and "Errno" not in res.stderr


def test_a_wildcard_bind_names_addresses_other_machines_can_use(source_cache, tmp_path):
    from edgetam_provision.serve.run import reachable_addresses

    assert "0.0.0.0" not in reachable_addresses("0.0.0.0")
    assert reachable_addresses("192.168.1.5") == ["192.168.1.5"]
