"""Backups and restores: round trips, old-style backups, idempotence, merging, dry runs."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from conftest import hf_cache_verify, run_cli, run_cli_process, tree_state

from edgetam_provision.hub.cache import check_revision, read_ref, scan_cache
from edgetam_provision.hub.layout import repo_folder_name


def commit_of(cache: Path, repo_id: str) -> str:
    ref = read_ref(cache / repo_folder_name(repo_id))
    assert ref
    return ref


def test_backup_writes_archive_manifest_and_sha256sums(cache, tmp_path):
    out = tmp_path / "backups"
    res = run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache, "--json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    [b] = data["backups"]
    archive = Path(b["archive"])
    assert archive.is_file() and archive.suffix == ".tar"
    manifest = json.loads((out / "manifest.json").read_text())["archives"][archive.name]
    assert manifest["repo_id"] == "org/tiny"
    assert manifest["commit"] == commit_of(cache, "org/tiny")
    assert {f["path"] for f in manifest["files"]} == {"config.json", "model.safetensors",
                                                      "sub/notes.txt"}
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with tarfile.open(archive) as tar:
        names = {m.name: m for m in tar.getmembers()}
    link = names[f"models--org--tiny/snapshots/{manifest['commit']}/sub/notes.txt"]
    assert link.issym() and link.linkname.startswith("../../../blobs/")
    assert all(m.isreg() for n, m in names.items() if "/blobs/" in n)


def test_round_trip_into_an_empty_cache_then_offline_download_works(cache, hub, tmp_path):
    out = tmp_path / "backups"
    assert run_cli("backup", "--out", out, "--cache-dir", cache, "org/tiny", "org/other").exit_code == 0
    fresh = tmp_path / "fresh"
    res = run_cli("restore", out, "--cache-dir", fresh)
    assert res.exit_code == 0, res.stderr
    for repo in ("org/tiny", "org/other"):
        commit = commit_of(fresh, repo)
        assert (fresh / repo_folder_name(repo) / "refs" / "main").read_bytes() == commit.encode()
        assert check_revision(fresh, repo, commit).ok
    code = ("from huggingface_hub import hf_hub_download as d;"
            f"p = d('org/tiny', 'sub/notes.txt', cache_dir={str(fresh)!r});"
            "print(open(p).read())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                               "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "nested file"
    for repo in ("org/tiny", "org/other"):  # every checksum against the Hub's listing, by huggingface_hub
        judge = hf_cache_verify(hub, fresh, repo)
        assert judge.returncode == 0, judge.stdout + judge.stderr


def test_second_restore_reports_already_present_and_writes_nothing(cache, tmp_path):
    out = tmp_path / "backups"
    run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache)
    fresh = tmp_path / "fresh"
    assert run_cli("restore", out, "--cache-dir", fresh).exit_code == 0
    before = tree_state(fresh)
    res = run_cli("restore", out, "--cache-dir", fresh, "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["writes"] == 0
    assert data["archives"][0]["status"] == "already present"
    assert tree_state(fresh) == before


def test_dry_run_prints_the_plan_and_writes_nothing(cache, tmp_path):
    out = tmp_path / "backups"
    run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache)
    fresh = tmp_path / "fresh"
    res = run_cli("restore", out, "--cache-dir", fresh, "--dry-run")
    assert res.exit_code == 0
    assert "would write" in res.stdout and "blobs/" in res.stdout and "refs/main" in res.stdout
    assert not fresh.exists()


def test_restore_merges_with_revisions_already_in_the_cache(cache, tmp_path):
    out = tmp_path / "backups"
    run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache)
    other_only = tmp_path / "other-only"
    other_only.mkdir()
    shutil.copytree(cache / "models--org--other", other_only / "models--org--other", symlinks=True)
    before_other = tree_state(other_only / "models--org--other")
    assert run_cli("restore", out, "--cache-dir", other_only).exit_code == 0
    assert tree_state(other_only / "models--org--other") == before_other
    assert {r.repo_id for r in scan_cache(other_only)} == {"org/tiny", "org/other"}
    assert all(r.ok for r in scan_cache(other_only))


def test_a_damaged_cached_blob_is_repaired_from_the_verified_backup(cache, hub, tmp_path):
    out = tmp_path / "backups"
    run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache)
    blob = next(p for p in (cache / "models--org--tiny" / "blobs").iterdir() if len(p.name) == 64)
    good = blob.read_bytes()
    blob.unlink()
    blob.write_bytes(b"short and wrong")
    res = run_cli("restore", out, "--cache-dir", cache, "--json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["archives"][0]["status"] == "repaired" and data["archives"][0]["repaired_blobs"] == 1
    assert blob.read_bytes() == good
    assert all(r.ok for r in scan_cache(cache))
    assert hf_cache_verify(hub, cache, "org/tiny").returncode == 0


def test_a_restore_leaves_no_thread_behind(cache, tmp_path):
    """Its readers, hashers and writers all end: a long-lived process (a test run) may restore often."""
    import threading

    out = tmp_path / "backups"
    assert run_cli("backup", "org/tiny", "org/other", "--out", out, "--cache-dir", cache).exit_code == 0
    before = set(threading.enumerate())
    for _ in range(3):
        assert run_cli("restore", out, "--cache-dir", tmp_path / "fresh").exit_code == 0
    assert set(threading.enumerate()) - before == set()


def test_a_damaged_revision_after_a_clean_one_leaves_the_out_folder_as_it_was(cache, tmp_path):
    """Blobs are hashed while packed: the clean archive packed first is not put in place either."""
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    blob = max((cache / "models--org--other" / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.unlink()
    blob.write_bytes(bytes(data))
    res = run_cli("backup", "org/tiny", "org/other", "--out", out, "--cache-dir", cache)
    assert res.exit_code == 1 and "org/other" in res.stderr and "does not match its hash" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("compress", ["none", "gzip"])
def test_a_cached_blob_of_the_right_size_but_wrong_bytes_is_found_and_repaired(cache, hub, tmp_path,
                                                                               compress):
    """The cached copy is hashed (uncompressed: on its own thread, then the member is read again) or
    compared byte by byte (a compressed stream): either way the damage is found and repaired."""
    out = tmp_path / "backups"
    res = run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache, "--compress", compress)
    assert res.exit_code == 0, res.stderr
    blob = next(p for p in (cache / "models--org--tiny" / "blobs").iterdir() if len(p.name) == 64)
    good = blob.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    blob.unlink()
    blob.write_bytes(bytes(bad))
    dry = json.loads(run_cli("restore", out, "--cache-dir", cache, "--dry-run", "--json").stdout)
    assert dry["archives"][0]["repaired_blobs"] == 1 and blob.read_bytes() == bytes(bad)
    res = run_cli("restore", out, "--cache-dir", cache, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["archives"][0]["repaired_blobs"] == 1
    assert blob.read_bytes() == good
    assert hf_cache_verify(hub, cache, "org/tiny").returncode == 0


def test_refuses_to_back_up_a_damaged_revision(cache, tmp_path):
    blob = next(p for p in (cache / "models--org--tiny" / "blobs").iterdir() if len(p.name) == 64)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    res = run_cli("backup", "org/tiny", "--out", tmp_path / "b", "--cache-dir", cache)
    assert res.exit_code == 1
    assert "integrity" in res.stderr and "model.safetensors" in res.stderr
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_shared_blob_store_links_are_packed_as_real_bytes(cache, tmp_path):
    """hub 2.x may store blobs/<etag> as a link into <cache>/blobs/…: the archive must carry bytes."""
    repo = cache / "models--org--tiny"
    blob = next(p for p in (repo / "blobs").iterdir() if len(p.name) == 64)
    shared = cache / "blobs" / blob.name[:2] / ("xet" + blob.name)
    shared.parent.mkdir(parents=True)
    blob.rename(shared)
    blob.symlink_to(shared)
    out = tmp_path / "backups"
    assert run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache).exit_code == 0
    fresh = tmp_path / "fresh"
    assert run_cli("restore", out, "--cache-dir", fresh).exit_code == 0
    restored = fresh / "models--org--tiny" / "blobs" / blob.name
    assert restored.is_file() and not restored.is_symlink()
    assert restored.read_bytes() == shared.read_bytes()


def test_gzip_backup_round_trip(cache, tmp_path):
    out = tmp_path / "backups"
    res = run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache, "--compress", "gzip")
    assert res.exit_code == 0
    assert next(out.glob("*.tar.gz"))
    assert run_cli("restore", out, "--cache-dir", tmp_path / "fresh").exit_code == 0


def seed_backup(cache: Path, dest: Path, repo: str, prefix: str = "") -> Path:
    """Make a backup the way the user did by hand: tar czf X -C ~/.cache/huggingface/hub models--…"""
    folder = repo_folder_name(repo)
    if prefix:
        root = dest.parent / "home"
        (root / prefix).mkdir(parents=True, exist_ok=True)
        shutil.copytree(cache / folder, root / prefix / folder, symlinks=True)
        subprocess.run(["tar", "czf", dest, "-C", root, f"{prefix}{folder}"], check=True)
    else:
        subprocess.run(["tar", "czf", dest, "-C", cache, folder], check=True)
    return dest


def test_seed_style_tar_czf_backups_restore_without_manifest(cache, tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    seed_backup(cache, seeds / "edgetam_model.tar.gz", "org/tiny")
    seed_backup(cache, seeds / "repvit_model.tar.gz", "org/other", prefix=".cache/huggingface/hub/")
    fresh = tmp_path / "fresh"
    res = run_cli("restore", seeds, "--cache-dir", fresh, "--json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert {a["checked_by"] for a in data["archives"]} == {"blob names"}
    assert all(r.ok for r in scan_cache(fresh)) and len(scan_cache(fresh)) == 2


def test_seed_style_backup_with_hub_prefix_restores(cache, tmp_path):
    archive = seed_backup(cache, tmp_path / "x.tar.gz", "org/tiny", prefix="hub/")
    assert run_cli("restore", archive, "--cache-dir", tmp_path / "fresh").exit_code == 0


def test_seed_backup_with_one_flipped_byte_in_a_blob_is_rejected(cache, tmp_path):
    archive = seed_backup(cache, tmp_path / "edgetam_model.tar.gz", "org/tiny")
    raw = bytearray(gzip.decompress(archive.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        big = next(m for m in tar.getmembers() if m.isreg() and m.size > 1000)
    raw[big.offset_data + 500] ^= 0x01
    archive.write_bytes(gzip.compress(bytes(raw)))
    fresh = tmp_path / "fresh"
    res = run_cli("restore", archive, "--cache-dir", fresh)
    assert res.exit_code == 1
    assert big.name.split("/")[-1] in res.stderr
    assert not any(p for p in tree_state(fresh) if "models--" in p)


def test_seed_backup_with_a_flipped_byte_in_the_gzip_stream_is_rejected(cache, tmp_path):
    archive = seed_backup(cache, tmp_path / "edgetam_model.tar.gz", "org/tiny")
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    archive.write_bytes(bytes(raw))
    fresh = tmp_path / "fresh"
    try:  # a flip gzip's CRC catches: a corrupt archive; one that inflates to other bytes: integrity
        gzip.decompress(bytes(raw))
        expected = 1
    except (OSError, EOFError, zlib.error):
        expected = 4
    res = run_cli("restore", archive, "--cache-dir", fresh)
    assert res.exit_code == expected, res.stderr
    assert not any(p for p in tree_state(fresh) if "models--" in p)


def test_archive_sha256_is_checked_against_the_manifest(cache, tmp_path):
    out = tmp_path / "backups"
    run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache)
    archive = next(out.glob("*.tar"))
    with open(archive, "ab") as fh:  # still a valid tar, but not the bytes the manifest names
        fh.write(b"\0" * 512)
    res = run_cli("restore", out, "--cache-dir", tmp_path / "fresh")
    assert res.exit_code == 1
    assert archive.name in res.stderr and "sha256" in res.stderr
    assert not (tmp_path / "fresh" / "models--org--tiny").exists()
    assert run_cli("restore", out, "--cache-dir", tmp_path / "fresh", "--dry-run").exit_code == 1


def test_missing_backups_folder_is_a_usage_error(tmp_path):
    res = run_cli("restore", tmp_path / "nope", "--cache-dir", tmp_path / "c")
    assert res.exit_code == 2
    assert "no such file" in res.stderr and "hint:" in res.stderr


def test_status_lists_backups_and_cache_with_integrity(cache, tmp_path):
    out = tmp_path / "backups"
    run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache)
    res = run_cli("status", "--backups", out, "--cache-dir", cache, "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["backups"][0]["manifest"] is True
    assert {r["repo_id"]: r["integrity"] for r in data["revisions"]} == {"org/tiny": "ok",
                                                                        "org/other": "ok"}
    blob = next(p for p in (cache / "models--org--other" / "blobs").iterdir() if len(p.name) == 40)
    blob.write_bytes(blob.read_bytes() + b"x")
    res = run_cli("status", "--backups", out, "--cache-dir", cache)
    assert res.exit_code == 1 and "bad" in res.stdout and "does not match its hash" in res.stdout


def test_cache_dir_is_resolved_like_huggingface_hub(tmp_path):
    """Each variable, in huggingface_hub's order, in a fresh process (constants read at import)."""
    cases = {
        "HF_HUB_CACHE": {"HF_HUB_CACHE": str(tmp_path / "a"), "HF_HOME": str(tmp_path / "h")},
        "HUGGINGFACE_HUB_CACHE": {"HUGGINGFACE_HUB_CACHE": str(tmp_path / "b"),
                                  "HF_HOME": str(tmp_path / "h")},
        "HF_HOME": {"HF_HOME": str(tmp_path / "h"), "XDG_CACHE_HOME": str(tmp_path / "x")},
        "XDG_CACHE_HOME": {"XDG_CACHE_HOME": str(tmp_path / "x")},
    }
    for source, env in cases.items():
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")}
        code = ("from edgetam_provision.hub.cache import resolve_cache_dir as r;"
                "from huggingface_hub import constants as c; l = r();"
                "print(l.source, l.path == __import__('pathlib').Path(c.HF_HUB_CACHE))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                              text=True, env={**clean, **env})
        assert proc.stdout.split() == [source, "True"], (source, proc.stderr)


def test_cli_restore_in_a_separate_process_reports_progress_on_stderr(cache, tmp_path):
    out = tmp_path / "backups"
    run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache)
    proc = run_cli_process("restore", out, "--cache-dir", tmp_path / "fresh")
    assert proc.returncode == 0, proc.stderr
    assert "restored" in proc.stdout and "checking every byte" in proc.stderr


def test_where_symlinks_are_unsupported_restore_writes_copies_that_work(cache, tmp_path, monkeypatch):
    from edgetam_provision.restore import publish as restore_module

    out = tmp_path / "backups"
    run_cli("backup", "org/tiny", "--out", out, "--cache-dir", cache)
    monkeypatch.setattr(restore_module, "symlinks_supported", lambda _folder: False)
    fresh = tmp_path / "fresh"
    assert run_cli("restore", out, "--cache-dir", fresh).exit_code == 0
    commit = commit_of(fresh, "org/tiny")
    snap = fresh / "models--org--tiny" / "snapshots" / commit
    entry = snap / "sub" / "notes.txt"
    assert entry.is_file() and not entry.is_symlink() and entry.read_bytes() == b"nested file\n"
    assert check_revision(fresh, "org/tiny", commit).ok  # copies are checked against the blobs
    again = run_cli("restore", out, "--cache-dir", fresh, "--json")
    assert json.loads(again.stdout)["writes"] == 0
    # a copy-mode cache backs up like any other: links in the archive, real bytes in the blobs
    assert run_cli("backup", "org/tiny", "--out", tmp_path / "b2", "--cache-dir", fresh).exit_code == 0
    assert run_cli("restore", tmp_path / "b2", "--cache-dir", tmp_path / "third").exit_code == 0


def test_a_copied_snapshot_file_with_wrong_bytes_is_reported(cache):
    commit = commit_of(cache, "org/tiny")
    entry = cache / "models--org--tiny" / "snapshots" / commit / "config.json"
    entry.unlink()
    entry.write_bytes(b'{"tampered": true}')
    state = check_revision(cache, "org/tiny", commit)
    assert not state.ok and "match no blob" in state.problems[0]


def test_zstd_backup_round_trips(cache, tmp_path):
    pytest.importorskip("zstandard")
    res = run_cli("backup", "org/tiny", "--out", tmp_path / "z", "--cache-dir", cache, "--compress", "zstd")
    assert res.exit_code == 0, res.stderr
    assert next((tmp_path / "z").glob("*.tar.zst"))
    fresh = tmp_path / "fresh"
    assert run_cli("restore", tmp_path / "z", "--cache-dir", fresh).exit_code == 0
    assert check_revision(fresh, "org/tiny", commit_of(fresh, "org/tiny")).ok


def test_zstd_without_its_package_is_a_clear_usage_error(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    res = run_cli("backup", "org/tiny", "--out", tmp_path / "z", "--cache-dir", cache, "--compress", "zstd")
    assert res.exit_code == 2 and "zstandard" in res.stderr and "hint:" in res.stderr
    assert not list((tmp_path / "z").glob("*.tar.zst*"))


def test_a_dry_run_and_a_check_never_say_restored(cache, tmp_path):
    import json as _json

    out = tmp_path / "b"
    assert run_cli("backup", "org/tiny", "--cache-dir", cache, "--out", out).exit_code == 0
    fresh = tmp_path / "fresh"
    dry = run_cli("restore", out, "--cache-dir", fresh, "--dry-run", "--json")
    assert [a["status"] for a in _json.loads(dry.stdout)["archives"]] == ["would restore"]
    text = run_cli("restore", out, "--cache-dir", fresh, "--dry-run").stdout
    assert "would restore" in text and "would write" in text and " restored " not in text
    checked = run_cli("check", out).stdout
    assert "intact" in checked and "restored" not in checked and "checked 1 backup file:" in checked
    real = run_cli("restore", out, "--cache-dir", fresh).stdout
    assert "restored" in real and "wrote " in real


def test_a_check_lists_no_cache_actions_and_counts_blobs_not_new_blobs(cache, tmp_path):
    """A check has no cache: one line per archive and the verdict, with or without -q."""
    out = tmp_path / "b"
    assert run_cli("backup", "org/tiny", "--cache-dir", cache, "--out", out).exit_code == 0
    for quiet in ((), ("-q",)):
        res = run_cli("check", out, *quiet)
        assert res.exit_code == 0, res.stderr
        archive, verdict = res.stdout.splitlines()
        assert archive.split()[0] == "intact" and "(3 blobs, " in archive
        assert verdict == "checked 1 backup file: every member and every byte is intact (no cache involved)"


def test_a_restore_counts_one_entry_as_one_and_names_the_cache_resolved(cache, tmp_path):
    out = tmp_path / "b"
    assert run_cli("backup", "org/tiny", "--cache-dir", cache, "--out", out).exit_code == 0
    (tmp_path / "big1").mkdir()
    given, real = tmp_path / "big1" / ".." / "cacheD", (tmp_path / "cacheD").resolve()
    res = run_cli("restore", out, "--cache-dir", given)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"wrote 8 entries into {real}"
    (real / repo_folder_name("org/tiny") / "refs" / "main").unlink()
    res = run_cli("restore", out, "--cache-dir", given)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"wrote 1 entry into {real}"
    assert f"published 1 entry into {real}\n" in res.stderr
