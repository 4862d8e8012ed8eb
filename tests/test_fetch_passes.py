"""How often `provision fetch` reads each archive (`pipeline`'s numbered passes): its whole bytes are
hashed once, as they arrive; its headers are read once, by the acceptance rule; the blob pass (the
restore's read, or the check without `--restore`) takes what the rule read instead of reading the
headers again, and hashes no whole file again. `provision restore`, given files, does both itself.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from builders import fetch_args
from conftest import run_cli

from edgetam_provision.archive import untrusted
from edgetam_provision.hub.manifest import read_manifest
from edgetam_provision.integrity import hashing
from edgetam_provision.restore.run import Admitted, restore
from edgetam_provision.trust import accept


@pytest.fixture
def passes(monkeypatch) -> dict[str, Counter[str]]:
    """Counts, by file name, of the archives' headers read (the acceptance rule's scan) and of files
    hashed whole from disk (every whole-file sha256 goes through `hashing.hash_file`)."""
    counts: dict[str, Counter[str]] = {"headers": Counter(), "hashed whole": Counter()}
    scan, hash_file = untrusted.scan_archive, hashing.hash_file

    def counted_scan(path, bounds):
        counts["headers"][Path(path).name] += 1
        return scan(path, bounds)

    def counted_hash(path, *hashers):
        counts["hashed whole"][Path(path).name] += 1
        return hash_file(path, *hashers)

    monkeypatch.setattr(accept, "scan_archive", counted_scan)
    monkeypatch.setattr(hashing, "hash_file", counted_hash)
    return counts


@pytest.mark.parametrize("then", ["restore", "check"])
def test_a_fetch_reads_each_archives_headers_once_and_hashes_it_whole_once_as_it_arrives(
        sshd, hub, tmp_path, passes, then):
    cache = tmp_path / "cache"
    extra = ["--restore", "--cache-dir", cache] if then == "restore" else []
    res = run_cli(*fetch_args(sshd, hub, tmp_path / "b", "--repo", "org/tiny", "--repo", "org/other",
                              "--timeout", "10", "--json", *extra))
    assert res.exit_code == 0, res.stderr
    archives = json.loads(res.stdout)["archives"]
    names = sorted(Path(a["archive"]).name for a in archives)
    assert len(names) == 2 and not any(a["already_here"] for a in archives)  # hashed as they arrived
    assert {n: passes["headers"][n] for n in names} == dict.fromkeys(names, 1)
    assert {n: passes["hashed whole"][n] for n in names} == dict.fromkeys(names, 0)
    if then == "restore":
        assert json.loads(res.stdout)["restore"]["writes"] > 0
        restored = [a["checked_by"] for a in json.loads(res.stdout)["restore"]["archives"]]
        assert restored == ["manifest", "manifest"]  # the sha256 checked on receipt is the manifest's


def test_a_restore_of_the_fetched_files_reads_and_hashes_them_itself(sshd, hub, tmp_path, passes):
    """`provision restore` gets its files from the user: it admits and hashes each whole again."""
    assert run_cli(*fetch_args(sshd, hub, tmp_path / "b", "--repo", "org/tiny")).exit_code == 0
    [name] = read_manifest(tmp_path / "b")
    passes["headers"].clear()
    res = run_cli("restore", tmp_path / "b", "--cache-dir", tmp_path / "cache")
    assert res.exit_code == 0, res.stderr
    assert (passes["headers"][name], passes["hashed whole"][name]) == (1, 1)


def test_contents_admitted_against_another_sha256_are_not_taken(sshd, hub, tmp_path, passes):
    """A pre-check counts only for the declaration it was made against: where the manifest names
    another sha256 than the one the caller hashed against, the restore admits and hashes itself."""
    assert run_cli(*fetch_args(sshd, hub, tmp_path / "b", "--repo", "org/tiny")).exit_code == 0
    [(name, entry)] = read_manifest(tmp_path / "b").items()
    archive = (tmp_path / "b" / name).resolve()
    contents = accept.admit(archive, entry)
    passes["headers"].clear()
    restore([archive], tmp_path / "cache", admitted={archive: Admitted(contents, "0" * 64)})
    assert (passes["headers"][name], passes["hashed whole"][name]) == (1, 1)
