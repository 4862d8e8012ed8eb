"""A revision of many tiny files restores with work that grows in step with its files.

No clock: the filesystem calls a restore makes (and the members tarfile's data filter walks) are
counted for a revision of N files and of 2N. Linear work doubles; work per file that grows with N
(a list scanned per member, a folder listed per blob) shows as a ratio well past 2. The figures
at 100,000 files are in benchmarks/results/restore.md (bench_small_files.py).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from builders import small_files_cache

from edgetam_provision.archive import untrusted
from edgetam_provision.backup import backup
from edgetam_provision.hub.cache import check_revision
from edgetam_provision.repos import RepoSpec
from edgetam_provision.restore.run import restore

REPO = "bench/small"
FS_CALLS = ("open", "stat", "lstat", "listdir", "scandir", "mkdir", "makedirs", "symlink", "replace",
            "rename", "readlink", "unlink", "rmdir")


@pytest.fixture(scope="module")
def backups(tmp_path_factory) -> dict[int, tuple[Path, str]]:
    """Backups of 20 folders of 100 and of 200 tiny files: files -> (backups folder, commit)."""
    made = {}
    for per_folder in (100, 200):
        root = tmp_path_factory.mktemp(f"small-{per_folder}")
        commit = small_files_cache(root / "cache", REPO, 20, per_folder)
        backup(root / "cache", [RepoSpec(REPO)], root / "backups")
        made[20 * per_folder] = (root / "backups", commit)
    return made


def counted_restore(backups_folder: Path, cache: Path, monkeypatch) -> dict[str, int]:
    """Restore with every filesystem call of `os` (and tarfile's data filter) counted."""
    counts = {name: itertools.count() for name in (*FS_CALLS, "data filter")}
    with monkeypatch.context() as m:
        for name in FS_CALLS:
            m.setattr(os, name, _counting(getattr(os, name), counts[name]))
        if untrusted.DATA_FILTER is not None:
            m.setattr(untrusted, "DATA_FILTER", _counting(untrusted.DATA_FILTER, counts["data filter"]))
        restore([backups_folder], cache)
    return {name: next(c) for name, c in counts.items()}


def _counting(fn, counter):
    def counted(*args, **kwargs):
        next(counter)  # atomic in CPython: the read pass's threads count too
        return fn(*args, **kwargs)
    return counted


@pytest.mark.slow
def test_restore_work_grows_in_step_with_the_files(backups, tmp_path, monkeypatch):
    counts = {}
    for files, (folder, commit) in backups.items():
        cache = tmp_path / f"cache-{files}"
        counts[files] = counted_restore(folder, cache, monkeypatch)
        state = check_revision(cache, REPO, commit)
        assert state.ok and len(state.files) == files  # every file restored, every blob hashed again
    small, big = counts[2000], counts[4000]
    total = {n: sum(v for k, v in c.items() if k != "data filter") for n, c in counts.items()}
    assert total[4000] <= 2.1 * total[2000], (small, big)
    assert total[4000] <= 8 * 4000, big  # a handful of calls per file and its link, not a walk per file
    assert big["data filter"] == small["data filter"] < 50  # folders and refs only, never per file
