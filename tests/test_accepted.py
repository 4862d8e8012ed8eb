"""The acceptance rule (docs/accepted.md): what is kept is exactly what was declared, and reading
it is bounded by what was declared before the first byte.

`restore`, `restore --dry-run`, `check` and fetch's own check apply the one rule and agree: what
check passes, restore publishes whole; what it refuses, nothing is written. The hostile backups
come from `hostile_backups` (one builder: a genuine backup, then what an attacker makes of it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_cli, tree_state
from hostile_backups import (
    COMPRESSIONS,
    KINDS,
    PLANTED,
    Genuine,
    Hostile,
    HostileBackup,
    R,
    genuine_backup,
    hostile_backups,
    tar_bytes,
)
from hypothesis import HealthCheck, given, settings

from edgetam_provision.errors import HostMisbehaved
from edgetam_provision.fetch.client import Pulled
from edgetam_provision.fetch.run import check_pulled
from edgetam_provision.hub.cache import check_revision
from edgetam_provision.hub.manifest import ArchiveEntry

DEADLINE_S = 60  # a hang is a failure, not a stuck suite


@pytest.fixture
def genuine(cache, tmp_path) -> Genuine:
    return genuine_backup(cache, tmp_path / "genuine")


@pytest.fixture
def exact(genuine, tmp_path) -> dict:
    """The cache a restore of the genuine backup makes from nothing: what "exactly the genuine
    revision" means, entry by entry."""
    fresh = tmp_path / "exact"
    assert run_cli("restore", genuine.archive, "--cache-dir", fresh).exit_code == 0
    return cache_state(fresh)


def cache_state(cache: Path) -> dict:
    return {k: v for k, v in tree_state(cache).items() if not k.startswith(".locks")}


@contextlib.contextmanager
def deadline(seconds: int = DEADLINE_S):
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def verdicts(archive: Path, cache: Path) -> tuple:
    """(check, restore --dry-run, restore) of one archive into `cache`, each within the deadline."""
    with deadline():
        check = run_cli("check", archive)
        dry = run_cli("restore", archive, "--cache-dir", cache, "--dry-run")
        real = run_cli("restore", archive, "--cache-dir", cache)
    return check, dry, real


def consistent(cache: Path) -> None:
    """What a restore without a declaration kept: every ref a complete, intact revision, and no blob
    that no snapshot file uses."""
    for repo in (p for p in cache.iterdir() if p.name.startswith("models--")):
        used = {p.resolve().name for p in (repo / "snapshots").rglob("*") if p.is_symlink()}
        assert {b.name for b in (repo / "blobs").iterdir()} == used
        for ref in (p for p in (repo / "refs").rglob("*") if p.is_file()):
            repo_id = repo.name.removeprefix("models--").replace("--", "/")
            state = check_revision(cache, repo_id, ref.read_text())
            assert state.ok and state.files, state.problems


# ---------------------------------------------------------------------------- the property

@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=hostile_backups())
def test_a_hostile_backup_is_restored_exactly_as_declared_or_not_at_all(genuine, exact, tmp_path_factory,
                                                                        case: HostileBackup):
    """Extra repos, refs and snapshots, missing files, header sizes that lie, long and unservable
    names, small bombs, damage, in every compression, with the genuine manifest or none: never
    exit 70; check, --dry-run and restore give one verdict; exit 0 keeps exactly the declared
    revision (or, without a manifest, a consistent cache); a refusal writes nothing."""
    work = tmp_path_factory.mktemp("hostile")
    archive, must = case.write(genuine, work / "in")
    cache = work / "cache"
    check, dry, real = verdicts(archive, cache)
    assert 70 not in (check.exit_code, dry.exit_code, real.exit_code), real.stderr + check.stderr
    assert check.exit_code == dry.exit_code == real.exit_code, (check.stderr, dry.stderr, real.stderr)
    if must is not None:
        assert (real.exit_code == 0) == must, real.stderr
    if real.exit_code != 0:
        assert "\nerror: " in "\n" + real.stderr and "hint: " in real.stderr
        assert cache_state(cache) == {}
    elif case.with_manifest:
        assert cache_state(cache) == exact
    else:
        consistent(cache)


# ---------------------------------------------------------------------------- each part of the rule

REFUSED = {  # kind -> (exit code, what the error names), with the genuine manifest
    "planted-repo": (3, PLANTED), "ref-moved": (3, "does not declare"), "extra-snapshot": (3, "snapshot"),
    "extra-ref": (3, "refs/dev"), "extra-file": (3, "extra.json"), "missing-file": (4, "sub/notes.txt"),
    "extra-blob": (3, "not listed in the manifest"), "size-lie-62": (3, "its header claims"),
    "size-lie-80": (3, "its header claims"), "long-name-bomb": (3, "long-name header"),
    "name-250-bytes": (3, "does not declare"), "unservable-name": (3, "separator character"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_what_the_manifest_does_not_declare_is_refused_by_all_three_and_nothing_is_written(genuine, tmp_path,
                                                                                          kind):
    assert set(REFUSED) | {"genuine", "reordered"} == set(KINDS)
    archive, _ = HostileBackup(kind, "gzip", True, None).write(genuine, tmp_path / "in")
    code, names = REFUSED[kind]
    for res in verdicts(archive, tmp_path / "target"):
        assert res.exit_code == code and names in res.stderr, res.stderr
    assert cache_state(tmp_path / "target") == {}


def test_a_listed_file_the_archive_lacks_fails_fetchs_own_check_as_it_fails_restore(genuine, tmp_path):
    """fetch once said OK for an archive that restore then refused; now its check is restore's rule,
    the archive is removed, and nothing is recorded."""
    out = tmp_path / "out"
    for kind in ("missing-file", "planted-repo", "ref-moved"):
        archive, _ = HostileBackup(kind, "none", True, None).write(genuine, out)
        entry = ArchiveEntry.from_dict(archive.name, json.loads((out / "manifest.json").read_text())
                                       ["archives"][archive.name])
        (out / "manifest.json").unlink()
        with pytest.raises(HostMisbehaved, match="is not what the host announced"):
            check_pulled([Pulled(archive, entry, 0, 0.0)], out)
        assert not archive.exists() and not (out / "manifest.json").exists()
    archive, _ = HostileBackup("genuine", "gzip", True, None).write(genuine, out)
    entry = ArchiveEntry.from_dict(archive.name, json.loads((out / "manifest.json").read_text())
                                   ["archives"][archive.name])
    check_pulled([Pulled(archive, entry, 0, 0.0)], out)
    assert json.loads((out / "manifest.json").read_text())["archives"][archive.name]["sha256"] == entry.sha256


SCRIPTED_HOST = REPO_ROOT / "tests" / "helpers" / "hostile_host.py"
FETCHED = [("genuine", "none"), ("planted-repo", "none"), ("ref-moved", "none"), ("missing-file", "none"),
           ("size-lie-62", "none"), ("size-lie-62", "gzip"), ("size-lie-80", "zstd"),
           ("long-name-bomb", "gzip")]


@pytest.mark.parametrize(("kind", "compression"), FETCHED)
def test_a_host_is_held_to_what_it_announced_and_an_honest_one_still_succeeds(genuine, exact, tmp_path,
                                                                            monkeypatch, kind, compression):
    """A scripted host announces org/tiny's genuine revision (its files and refs) and sends an
    archive that plants a repo, moves refs/main to a commit it never announced, lacks a listed
    file, or lies in a header (gzip bytes under a .tar name too): `fetch --restore` refuses it,
    removes it, records nothing and leaves the cache as it was."""
    members, tail, honest = Hostile(genuine).members(kind)
    e = genuine.entry
    # a compressed archive as big as its files, as the announcement must say (test_hostile_host)
    filler = os.urandom(sum(f["size"] for f in e["files"])) if compression != "none" else b""
    data = COMPRESSIONS[compression](tar_bytes(members, tail + filler))
    packed = {"event": "packed", "archive": genuine.archive.name, "repo_id": "org/tiny", "repo_type": "model",
              "commit": e["commit"], "refs": e["refs"], "files": e["files"],
              "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    steps = [{"line": {"event": "hello", "huggingface_hub": "2.4.0", "python": "3.12.0"}}, {"line": packed},
             {"line": {"event": "ready"}}, {"command": True},
             {"line": {"event": "data", "offset": 0, "length": len(data)}}, {"raw": data.decode("latin-1")},
             {"command": True}]
    (tmp_path / "scenario.json").write_text(json.dumps(steps))
    monkeypatch.setenv("HOSTILE_SCENARIO", str(tmp_path / "scenario.json"))
    wrapper = tmp_path / "host-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {SCRIPTED_HOST}\n")
    wrapper.chmod(0o755)
    target, out = tmp_path / "target", tmp_path / "out"
    with deadline():
        res = run_cli("fetch", "--local", "--remote-python", wrapper, "--repo", "org/tiny", "--out", out,
                      "--timeout", "5", "--stall", "5", "--restore", "--cache-dir", target)
    assert res.exit_code == (0 if honest else 15), res.stderr
    if honest:
        assert cache_state(target) == exact
        assert json.loads((out / "manifest.json").read_text())["archives"][genuine.archive.name]["files"] == \
            e["files"]
        return
    assert "is not what the host announced" in res.stderr and "it was removed" in res.stderr
    assert not list(out.iterdir())  # neither the archive nor a manifest that names it
    assert cache_state(target) == {}


def test_a_backup_without_a_manifest_keeps_no_blob_that_no_file_uses_and_says_so(genuine, tmp_path):
    archive, _ = HostileBackup("extra-blob", "none", False, None).write(genuine, tmp_path / "in")
    dry = run_cli("restore", archive, "--cache-dir", tmp_path / "target", "--dry-run", "--json")
    assert any("/blobs/" in s for s in json.loads(dry.stdout)["archives"][0]["skipped"])
    res = run_cli("restore", archive, "--cache-dir", tmp_path / "target")
    assert res.exit_code == 0, res.stderr
    assert "1 blobs that no snapshot file uses are not kept" in res.stderr
    consistent(tmp_path / "target")


def test_a_name_that_fits_the_filesystem_is_published_whatever_its_length(genuine, tmp_path):
    """A 250-byte name: check and --dry-run once passed what restore could not publish (the
    temporary name grew with it past NAME_MAX)."""
    archive, _ = HostileBackup("name-250-bytes", "none", False, None).write(genuine, tmp_path / "in")
    check, dry, real = verdicts(archive, tmp_path / "target")
    assert check.exit_code == dry.exit_code == real.exit_code == 0, real.stderr
    assert (tmp_path / "target" / R / "snapshots" / genuine.commit / ("n" * 245 + ".json")).is_file()


def test_a_name_serve_could_not_serve_is_refused(genuine, tmp_path):
    for compression in ("none", "zstd"):
        case = HostileBackup("unservable-name", compression, False, None)
        archive, _ = case.write(genuine, tmp_path / "in")
        for res in verdicts(archive, tmp_path / "target"):
            assert res.exit_code == 3 and "separator character" in res.stderr, res.stderr


def test_an_archive_of_another_size_than_declared_is_refused_before_it_is_read(genuine, tmp_path):
    archive, _ = HostileBackup("genuine", "none", True, None).write(genuine, tmp_path / "in")
    with open(archive, "ab") as fh:
        fh.write(b"\0" * 10240)
    res = run_cli("check", archive)
    assert res.exit_code == 1 and "its manifest declares" in res.stderr, res.stderr


# ---------------------------------------------------------------------------- manifests and sums

@pytest.mark.parametrize("number", ["1e999", "Infinity", "-Infinity", "NaN", "-1", "1125899906842625",
                                    "true", "1.5", '"12"', "null"])
@pytest.mark.parametrize("field", ["size", "file size"])
def test_a_manifest_number_that_is_no_size_is_an_integrity_error_everywhere(genuine, cache, tmp_path,
                                                                           field, number):
    folder = genuine.archive.parent
    data = json.loads((folder / "manifest.json").read_text())
    entry = data["archives"][genuine.archive.name]
    (entry if field == "size" else entry["files"][0])["size"] = "NUMBER"
    (folder / "manifest.json").write_text(json.dumps(data).replace('"NUMBER"', number))
    for args in (["restore", folder, "--cache-dir", tmp_path / "c"], ["check", folder],
                 ["status", "--backups", folder, "--cache-dir", cache],
                 ["backup", "org/tiny", "--out", folder, "--cache-dir", cache]):
        res = run_cli(*args)
        assert res.exit_code == 1 and "manifest" in res.stderr, (args[0], res.stderr)


def test_sha256sums_lines_written_as_dot_slash_name_check_the_archive(genuine):
    folder = genuine.archive.parent
    (folder / "manifest.json").unlink()
    digest = hashlib.sha256(genuine.archive.read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  ./{genuine.archive.name}\n")
    res = run_cli("check", folder, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["archives"][0]["checked_by"] == "SHA256SUMS"
    (folder / "SHA256SUMS").write_text(f"{'0' * 64}  ./{genuine.archive.name}\n")
    res = run_cli("check", folder)
    assert res.exit_code == 1 and "SHA256SUMS" in res.stderr


def test_sha256sums_naming_one_archive_twice_agree_or_are_refused(genuine):
    folder = genuine.archive.parent
    (folder / "manifest.json").unlink()
    digest = hashlib.sha256(genuine.archive.read_bytes()).hexdigest()
    name = genuine.archive.name
    (folder / "SHA256SUMS").write_text(f"{digest}  {name}\n{digest} *./{name}\n")
    assert run_cli("check", folder).exit_code == 0
    (folder / "SHA256SUMS").write_text(f"{digest}  {name}\n{'0' * 64}  {name}\n")
    res = run_cli("check", folder)
    assert res.exit_code == 1 and "twice" in res.stderr, res.stderr
