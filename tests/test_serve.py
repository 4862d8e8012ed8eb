"""`provision serve`: the verified cache as a read-only Hub endpoint, tried with real clients
(huggingface_hub 2.4 here, 0.36 in its own folder), hostile URLs, Range resumes, many clients."""

from __future__ import annotations

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
