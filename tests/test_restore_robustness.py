"""Restores survive kill -9, a full disk and a concurrent restore, leaving a consistent cache."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli_process, tree_state
from huggingface_hub import scan_cache_dir

from edgetam_provision.backup import backup
from edgetam_provision.hub.cache import check_revision, scan_cache
from edgetam_provision.repos import RepoSpec
from edgetam_provision.restore import run as restore_run
from edgetam_provision.restore.run import restore
from edgetam_provision.verify.synthetic import install_into_cache


@pytest.fixture(scope="module")
def big_backup(tmp_path_factory):
    """A ~40 MB backup of 160 files (many links to publish, several multi-MB blobs)."""
    src = tmp_path_factory.mktemp("big-src")
    rnd = random.Random(7)
    files = {f"shard/part-{i:03d}.bin": rnd.randbytes(150_000) for i in range(150)}
    files.update({f"weights-{i}.safetensors": rnd.randbytes(3_000_000) for i in range(5)})
    files.update({f"cfg/{i}.json": b'{"i": %d}' % i for i in range(5)})
    commit = install_into_cache(src, "org/big", files)
    out = tmp_path_factory.mktemp("big-backups")
    backup(src, [RepoSpec("org/big")], out)
    return out, commit


def consistent(cache, commit) -> None:
    """The cache holds a complete, verified revision and no leftovers of killed runs."""
    assert check_revision(cache, "org/big", commit).ok
    assert [r.commit for r in scan_cache(cache)] == [commit]
    leftovers = [p for p in tree_state(cache) if ".provision-" in p or "provision-staging-" in p]
    assert leftovers == []


def written(cache) -> int:
    """Entries the restore has written so far: staged files, blobs, snapshot links, refs."""
    return sum(len([f for f in files if not f.endswith(".lock")]) for _, _, files in os.walk(cache))


def killed_after(out, cache, entries: int):
    """Start a restore and kill -9 it once it has written `entries` entries; None if it finished
    first. The kill waits on what the restore did, never on the clock."""
    proc = subprocess.Popen([sys.executable, "-m", "edgetam_provision", "restore", str(out), "--cache-dir",
                             str(cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if written(cache) >= entries:
            proc.send_signal(signal.SIGKILL)
            return proc if proc.wait() == -signal.SIGKILL else None  # it may have ended just before
        time.sleep(0.005)
    return None


@pytest.mark.slow
def test_kill_9_at_random_points_then_restore_again_is_consistent(big_backup, tmp_path):
    out, commit = big_backup
    rnd = random.Random(1234)
    for i in range(8):
        cache = tmp_path / f"cache{i}"
        entries = rnd.randint(1, 480)  # 160 staged files, 160 blobs, 160 links and a ref at most
        while killed_after(out, cache, entries) is None:  # it finished first: again, sooner
            shutil.rmtree(cache, ignore_errors=True)
            entries = max(1, entries // 2)
        # what the killed run left is where huggingface_hub's scan does not look
        assert not [w for w in scan_cache_dir(cache).warnings if "provision" in str(w)]
        # no partial blob is ever visible under its final name
        for blob in (cache / "models--org--big" / "blobs").glob("*"):
            assert blob.stat().st_size in (150_000, 3_000_000) or blob.stat().st_size < 100
        done = run_cli_process("restore", out, "--cache-dir", cache)
        assert done.returncode == 0, done.stderr
        consistent(cache, commit)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))


def test_disk_full_is_a_clear_error_and_nothing_is_published(big_backup, tmp_path):
    out, commit = big_backup
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = subprocess.run([sys.executable, "-m", "edgetam_provision", "restore", str(out),
                           "--cache-dir", str(cache)], capture_output=True, text=True,
                          preexec_fn=_limit_file_size)
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.count("error:") == 1 and "no space left" in proc.stderr
    assert "hint:" in proc.stderr
    assert not (cache / "models--org--big").exists()
    assert [p for p in tree_state(cache) if ".provision-" in p] == []
    again = run_cli_process("restore", out, "--cache-dir", cache)
    assert again.returncode == 0
    consistent(cache, commit)


def test_two_concurrent_restores_give_one_consistent_result(big_backup, tmp_path):
    out, commit = big_backup
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "edgetam_provision", "restore", str(out), "--cache-dir", str(cache),
           "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    writes = sorted(json.loads(r[0])["writes"] for r in results)
    assert writes[0] == 0 and writes[1] > 0
    consistent(cache, commit)


def test_restore_into_a_read_only_cache_is_a_clear_error(big_backup, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    out, _ = big_backup
    cache = tmp_path / "ro"
    cache.mkdir(mode=0o500)
    proc = run_cli_process("restore", out, "--cache-dir", cache)
    assert proc.returncode == 5 and "cannot write" in proc.stderr


def test_a_held_lock_becomes_the_locked_error_after_its_wait(tmp_path):
    import subprocess
    import sys

    from edgetam_provision.errors import LockedError
    from edgetam_provision.fsutil import LOCK_PATH, cache_lock

    cache = tmp_path / "cache"
    (cache / LOCK_PATH).parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import filelock,sys,time; l=filelock.FileLock(sys.argv[1]); l.acquire();"
                               "print('held', flush=True); time.sleep(30)", str(cache / LOCK_PATH)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said: list[str] = []
        with pytest.raises(LockedError), cache_lock(cache, timeout=0.3, waiting=said.append):
            pass
        assert len(said) == 1 and "waiting for another provision process" in said[0]  # not silent
    finally:
        holder.kill()
        holder.wait()
    with cache_lock(cache, timeout=5):  # the holder died: the kernel released it
        pass


def test_a_restore_imports_neither_filelock_nor_huggingface_hub(big_backup, tmp_path):
    """Their imports were most of a small restore's fixed cost; the lock is a plain flock, which
    filelock's lock on the same file excludes (see the held-lock test)."""
    out, _commit = big_backup
    code = ("import runpy, sys\n"
            "sys.argv = ['provision', 'restore', sys.argv[1], '--cache-dir', sys.argv[2], '-q']\n"
            "try:\n    runpy.run_module('edgetam_provision', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print(sorted(m for m in ('filelock', 'huggingface_hub') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "c")], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_a_repo_the_cache_lacks_is_published_by_one_rename(big_backup, tmp_path, monkeypatch):
    """Built whole beside the cache, it appears all at once: no blob is moved into place one by one."""
    out, commit = big_backup
    cache = tmp_path / "cache"
    renamed, replaced = [], []
    for name, calls in (("rename", renamed), ("replace", replaced)):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda a, b, _real=real, _calls=calls, **k: (
            _calls.append(str(b)), _real(a, b, **k))[1])
    restore([out], cache)
    assert renamed == [f"{cache}/models--org--big"]
    assert not [r for r in replaced if "/blobs/" in r]
    consistent(cache, commit)


def test_a_repo_folder_that_appears_during_the_restore_gets_the_entries_one_by_one(big_backup, tmp_path,
                                                                                   monkeypatch):
    """huggingface_hub downloading beside the restore made the folder first: it is kept, and the
    revision goes into it entry by entry, in the same order."""
    out, commit = big_backup
    cache = tmp_path / "cache"
    theirs = cache / "models--org--big" / "blobs" / ("f" * 40)
    real = restore_run.publish

    def with_a_download_beside(plan, progress):
        theirs.parent.mkdir(parents=True)
        theirs.write_bytes(b"a blob the download wrote")
        return real(plan, progress)

    monkeypatch.setattr(restore_run, "publish", with_a_download_beside)
    restore([out], cache)
    consistent(cache, commit)
    assert theirs.read_bytes() == b"a blob the download wrote"
