"""Restore verdicts: exit 0 means every restored revision loads offline, judged by huggingface_hub.

The judge is huggingface_hub itself (`snapshot_download(local_files_only=True)`,
`try_to_load_from_cache`, `scan_cache_dir`), not our own integrity check. Each finding of the
attack campaign is a named test; the property test mutates genuine archives at random.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from builders import write_tar
from conftest import examples, run_cli, tree_state
from hostile_backups import genuine_backup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetam_provision.hub.cache import read_ref

R = "models--org--tiny"


#: huggingface_hub's judge, one process for the session (imported once, under HF_HUB_OFFLINE): per
#: line `[cache, repo_id, revision]` in, one line out, "ok" or why not
JUDGE = """
import json, pathlib, sys
from huggingface_hub import scan_cache_dir, snapshot_download, try_to_load_from_cache
for line in sys.stdin:
    cache, repo, rev = json.loads(line)
    try:
        p = snapshot_download(repo, cache_dir=cache, revision=rev, local_files_only=True)
        files = [f.relative_to(p).as_posix() for f in pathlib.Path(p).rglob('*') if f.is_file()]
        assert files, 'empty snapshot'
        assert all(isinstance(try_to_load_from_cache(repo, f, cache_dir=cache, revision=rev), str)
                   for f in files), 'unresolvable'
        assert not scan_cache_dir(cache).warnings, 'scan warnings'
        print('ok', flush=True)
    except Exception as e:
        print(json.dumps(repr(e)), flush=True)
"""
_judge: list[subprocess.Popen[str]] = []


def hub_loads_offline(cache: Path, repo_id: str, revision: str = "main") -> bool:
    """huggingface_hub's own verdict: every file of the revision resolves from the cache alone."""
    if not _judge or _judge[0].poll() is not None:
        _judge[:] = [subprocess.Popen([sys.executable, "-c", JUDGE], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, "HF_HUB_OFFLINE": "1"})]
    judge = _judge[0]
    assert judge.stdin and judge.stdout
    judge.stdin.write(json.dumps([str(cache), repo_id, revision]) + "\n")
    judge.stdin.flush()
    return judge.stdout.readline().strip() == "ok"


@pytest.fixture(scope="module", autouse=True)
def _stop_the_judge():
    yield
    for judge in _judge:
        judge.stdin.close()
        judge.wait(timeout=30)


@pytest.fixture
def genuine(cache, tmp_path):
    """org/tiny's archive (made by `provision backup`), its members, and the source cache."""
    g = genuine_backup(cache, tmp_path / "genuine")
    return {"archive": g.archive, "members": g.members, "source": cache, "commit": g.commit}


def cache_state(cache: Path) -> dict:
    """`tree_state` without the lock folder (the lock file stays once a restore took it)."""
    return {k: v for k, v in tree_state(cache).items() if not k.startswith(".locks")}


def test_a_ref_to_a_commit_with_no_snapshot_files_is_refused(genuine, tmp_path):
    bare = [(m, d) for m, d in genuine["members"] if m.isdir() or "/refs/" in m.name]
    archive = write_tar(tmp_path / "bare.tar", bare)
    fresh = tmp_path / "fresh"
    res = run_cli("restore", archive, "--cache-dir", fresh)
    assert res.exit_code == 3 and "no snapshot files" in res.stderr
    assert not (fresh / R).exists()


def test_a_tar_cut_at_a_member_boundary_is_refused(genuine, tmp_path):
    archive = write_tar(tmp_path / "cut.tar", genuine["members"], end_marker=False)
    res = run_cli("restore", archive, "--cache-dir", tmp_path / "fresh")
    assert res.exit_code == 4 and "end-of-archive marker" in res.stderr
    gz = tmp_path / "cut.tar.gz"
    subprocess.run(["gzip", "-k", "-c", str(archive)], stdout=gz.open("wb"), check=True)
    res = run_cli("restore", gz, "--cache-dir", tmp_path / "fresh")
    assert res.exit_code == 4 and "end-of-archive marker" in res.stderr
    assert not (tmp_path / "fresh" / R).exists()


def test_a_corrupt_backup_is_refused_even_when_the_cache_holds_every_blob(genuine, tmp_path):
    big = next(m for m, _ in genuine["members"] if m.isreg() and len(m.name.rsplit("/", 1)[1]) == 64)
    raw = bytearray(genuine["archive"].read_bytes())
    raw[big.offset_data + 7] ^= 0x40
    bad = tmp_path / "in" / "bad.tar"
    bad.parent.mkdir()
    bad.write_bytes(bytes(raw))
    before = cache_state(genuine["source"])
    res = run_cli("restore", bad, "--cache-dir", genuine["source"])
    assert res.exit_code == 1 and big.name.rsplit("/", 1)[1] in res.stderr
    assert "nothing was written" in res.stderr
    assert cache_state(genuine["source"]) == before
    dry = run_cli("restore", bad, "--cache-dir", genuine["source"], "--dry-run")
    assert dry.exit_code == 1
    assert run_cli("check", bad).exit_code == 1


def test_check_verifies_backup_files_with_no_cache(genuine, tmp_path):
    res = run_cli("check", genuine["archive"].parent, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["archives"][0]["checked_by"] == "manifest"


def test_no_exist_markers_are_skipped_and_named(genuine, tmp_path):
    c = genuine["commit"]
    marker = tarfile.TarInfo(f"{R}/.no_exist/{c}/model.safetensors")
    archive = write_tar(tmp_path / "noexist.tar", [*genuine["members"], (marker, b"")])
    fresh = tmp_path / "fresh"
    res = run_cli("restore", archive, "--cache-dir", fresh)
    assert res.exit_code == 0, res.stderr
    assert "skipped 1 member not part of a revision" in res.stdout
    assert not (fresh / R / ".no_exist").exists()
    assert hub_loads_offline(fresh, "org/tiny")


def test_a_link_that_would_turn_a_snapshot_folder_into_a_link_is_refused(genuine, tmp_path):
    c = genuine["commit"]
    evil = tarfile.TarInfo(f"{R}/snapshots/{c}/sub")
    evil.type, evil.linkname = tarfile.SYMTYPE, "../../blobs"
    archive = write_tar(tmp_path / "dirlink.tar", [*genuine["members"], (evil, None)])
    res = run_cli("restore", archive, "--cache-dir", tmp_path / "fresh")
    assert res.exit_code == 3 and ".provision-staging" not in res.stderr


@pytest.mark.parametrize("content", [b"[1, 2]", b"[" * 100000, b'{"archives": {"x": 5}}',
                                     b'{"archives": {"x": {"repo_id": 1}}}', b"\xff\xfe"])
def test_a_malformed_manifest_is_an_integrity_error_not_a_crash(genuine, content):
    (genuine["archive"].parent / "manifest.json").write_bytes(content)
    res = run_cli("restore", genuine["archive"].parent, "--cache-dir", genuine["archive"].parent / "c")
    assert res.exit_code == 1 and "manifest" in res.stderr


def test_a_non_utf8_sha256sums_is_an_integrity_error(genuine):
    folder = genuine["archive"].parent
    (folder / "manifest.json").unlink()
    (folder / "SHA256SUMS").write_bytes(b"\xff\xfe\x00garbage")
    res = run_cli("restore", folder, "--cache-dir", folder / "c")
    assert res.exit_code == 1 and "SHA256SUMS" in res.stderr


def test_malformed_sparse_headers_are_refused_not_a_crash(genuine, tmp_path):
    ti = tarfile.TarInfo(f"{R}/blobs/{'ab' * 32}")
    ti.pax_headers = {"GNU.sparse.map": "x,y,z", "GNU.sparse.size": "nonsense"}
    archive = write_tar(tmp_path / "sparse.tar", [*genuine["members"], (ti, b"")])
    res = run_cli("restore", archive, "--cache-dir", tmp_path / "fresh")
    # tarfile cannot parse the header: a corrupt archive, not a crash
    assert res.exit_code == 4 and "not a readable tar archive" in res.stderr, res.stderr


def test_a_moved_ref_is_said_and_keep_refs_keeps_it(genuine, cache, tmp_path):
    old = genuine["commit"]
    (cache / R / "refs" / "main").write_text("f" * 40)
    shutil.copytree(cache / R / "snapshots" / old, cache / R / "snapshots" / ("f" * 40), symlinks=True)
    kept = run_cli("restore", genuine["archive"], "--cache-dir", cache, "--keep-refs")
    assert kept.exit_code == 0, kept.stderr
    assert (cache / R / "refs" / "main").read_text() == "f" * 40 and "kept" in kept.stdout
    moved = run_cli("restore", genuine["archive"], "--cache-dir", cache)
    assert moved.exit_code == 0
    assert f"{'f' * 12} → {old[:12]}" in moved.stdout
    assert read_ref(cache / R) == old


def test_the_same_archive_twice_counts_once(genuine, tmp_path):
    res = run_cli("restore", genuine["archive"], genuine["archive"], "--cache-dir", tmp_path / "f", "--json")
    assert res.exit_code == 0
    assert len(json.loads(res.stdout)["archives"]) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_dry_run_onto_a_read_only_cache_fails_like_the_real_run(genuine, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    assert run_cli("restore", genuine["archive"], "--cache-dir", ro / "hub", "--dry-run").exit_code == 5


def test_non_archives_among_the_paths_are_skipped_with_a_note(genuine, tmp_path):
    readme = genuine["archive"].parent / "README.md"
    readme.write_text("# my backups\n")
    res = run_cli("restore", genuine["archive"], readme, "--cache-dir", tmp_path / "fresh")
    assert res.exit_code == 0, res.stderr
    assert "README.md is not a backup archive" in res.stderr


# ---------------------------------------------------------------------------- hand-made shapes

def tar_cmd(args: list[str], cwd: Path) -> None:
    subprocess.run(["tar", *args], cwd=cwd, check=True, capture_output=True)


SHAPES = {
    "dot-slash": (["cf", "{out}", "-C", "{hub}", "."], ".tar"),
    "absolute-path": (["czf", "{out}", "{hub}/models--org--tiny"], ".tar.gz"),
    "whole-hub-folder": (["czf", "{out}", "-C", "{home}", "hub"], ".tar.gz"),
    "dereferenced": (["czhf", "{out}", "-C", "{hub}", "models--org--tiny"], ".tar.gz"),
    "bzip2": (["cjf", "{out}", "-C", "{hub}", "models--org--tiny"], ".tar.bz2"),
    "xz": (["cJf", "{out}", "-C", "{hub}", "models--org--tiny"], ".tar.xz"),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_backups_people_make_by_hand_restore_and_load_offline(cache, tmp_path, shape):
    home = tmp_path / "home"
    hub = home / "hub"
    shutil.copytree(cache, hub, symlinks=True)
    (hub / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (hub / ".locks" / R).mkdir(parents=True, exist_ok=True)
    (hub / ".locks" / R / "x.lock").write_text("")
    blob = next((hub / R / "blobs").iterdir())
    (hub / R / "blobs" / f"{blob.name}.incomplete").write_bytes(b"partial")
    args, suffix = SHAPES[shape]
    out = tmp_path / f"backup{suffix}"
    tar_cmd([a.format(out=out, hub=hub, home=home) for a in args], tmp_path)
    fresh = tmp_path / "fresh"
    res = run_cli("restore", out, "--cache-dir", fresh)
    assert res.exit_code == 0, res.stderr
    assert hub_loads_offline(fresh, "org/tiny")
    assert not list(fresh.rglob("*.incomplete")) and not (fresh / "CACHEDIR.TAG").exists()


# ---------------------------------------------------------------------------- the property

def mutations(members):
    n = len(members)
    return st.one_of(
        st.tuples(st.just("truncate-member"), st.integers(0, n)),
        st.tuples(st.just("truncate-byte"), st.integers(1, 400_000)),
        st.tuples(st.just("flip"), st.integers(0, 400_000)),
        st.tuples(st.just("drop"), st.integers(0, n - 1)),
        st.tuples(st.just("duplicate"), st.integers(0, n - 1)),
        st.tuples(st.just("reverse"), st.just(0)),
        st.tuples(st.just("ref-elsewhere"), st.just(0)),
    )


def mutate(members, kind: str, arg: int, commit: str) -> tuple[bytes, bool]:
    """The mutated archive's bytes, and whether it may still restore (False: must be refused)."""
    ms = list(members)
    if kind == "drop":
        ms.pop(arg)
    elif kind == "duplicate":
        ms.append(ms[arg])
    elif kind == "reverse":
        ms.reverse()
    elif kind == "ref-elsewhere":
        ti = tarfile.TarInfo(f"{R}/refs/other")
        ti.size = 40
        ms.append((ti, b"e" * 40))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        offsets = []
        for ti, data in ms:
            offsets.append(tar.offset)
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
        offsets.append(tar.offset)
    raw = bytearray(buf.getvalue())
    may = kind in ("reverse", "flip")  # the same members in another order; a flip may land in padding
    if kind == "truncate-member":  # cut at a member boundary: the end-of-archive marker is missing
        raw = raw[:offsets[min(arg, len(offsets) - 1)]]
    elif kind == "truncate-byte":
        raw = raw[:arg % len(raw)]
        may = len(raw) >= offsets[-1] + 1024  # only what follows the end-of-archive marker was cut
    elif kind == "flip":
        raw[arg % len(raw)] ^= 0x01
    elif kind == "drop":  # all but a blob's bytes may go: a folder, a ref, a listing, a link
        may = "/blobs/" not in members[arg][0].name or members[arg][0].isdir()
    elif kind == "duplicate":
        may = members[arg][0].isdir()
    return bytes(raw), may


@settings(max_examples=examples(ci=200, dev=25), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), preseed=st.booleans())
def test_property_exit_zero_means_huggingface_hub_loads_the_revision(genuine, tmp_path_factory, data,
                                                                     preseed):
    members = genuine["members"]
    kind, arg = data.draw(mutations(members))
    body, may_restore = mutate(members, kind, arg, genuine["commit"])
    work = tmp_path_factory.mktemp("prop")
    archive = work / "in" / "x.tar"
    archive.parent.mkdir()
    archive.write_bytes(body)
    cache = work / "cache"
    if preseed:
        shutil.copytree(genuine["source"], cache, symlinks=True)
    before = cache_state(cache)
    res = run_cli("restore", archive, "--cache-dir", cache)
    assert res.exit_code != 70, res.stderr
    assert may_restore or res.exit_code != 0, f"{kind} {arg} was restored"
    if res.exit_code == 0:
        assert hub_loads_offline(cache, "org/tiny", genuine["commit"])
        for ref in (cache / R / "refs").rglob("*"):  # every ref the cache now has loads too
            if ref.is_file():
                assert hub_loads_offline(cache, "org/tiny", ref.relative_to(cache / R / "refs").as_posix())
    else:
        assert "\nerror: " in "\n" + res.stderr and "hint: " in res.stderr
        assert cache_state(cache) == before


# ---------------------------------------------------------------------------- every read path

SIZES = {"tiny": 100, "small": 16_000, "big": 300_000}  # one thread, batches on several, a reader each


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """A backup (the archive alone: every byte checked by blob names) of org/mixed, whose blobs take
    each of the read pass's paths; and the member names of each size."""
    import random

    from edgetam_provision.backup import backup
    from edgetam_provision.hub.layout import blob_name, repo_folder_name, snapshot_link
    from edgetam_provision.repos import RepoSpec

    root, rng, commit = tmp_path_factory.mktemp("mixed"), random.Random(7), "a" * 40
    repo = root / "cache" / repo_folder_name("org/mixed")
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "snapshots" / commit).mkdir(parents=True)
    names: dict[str, list[str]] = {kind: [] for kind in SIZES}
    for kind, size in SIZES.items():
        for i in range({"tiny": 40, "small": 8, "big": 2}[kind]):
            data = rng.randbytes(size)
            blob = blob_name(data, lfs=True)
            (repo / "blobs" / blob).write_bytes(data)
            os.symlink(snapshot_link(f"{kind}{i}.bin", blob), repo / "snapshots" / commit / f"{kind}{i}.bin")
            names[kind].append(f"{repo.name}/blobs/{blob}")
    (repo / "refs" / "main").write_text(commit)
    backup(root / "cache", [RepoSpec("org/mixed")], root / "made")
    (root / "bare").mkdir()
    archive = next((root / "made").glob("*.tar"))
    shutil.copy(archive, root / "bare" / archive.name)
    return root / "bare" / archive.name, names


def test_blobs_of_every_read_path_restore_and_load_offline(mixed, tmp_path):
    archive, _ = mixed
    res = run_cli("restore", archive.parent, "--cache-dir", tmp_path / "hub")
    assert res.exit_code == 0, res.stderr
    assert hub_loads_offline(tmp_path / "hub", "org/mixed")


@pytest.mark.parametrize("kind", list(SIZES))
def test_one_flipped_byte_in_a_blob_of_any_read_path_is_refused_and_nothing_written(mixed, tmp_path, kind):
    archive, names = mixed
    bad = tmp_path / "bad" / archive.name
    bad.parent.mkdir()
    shutil.copy(archive, bad)
    with tarfile.open(bad) as tar:
        member = tar.getmember(names[kind][-1])
    with open(bad, "r+b") as fh:
        fh.seek(member.offset_data + member.size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 1]))
    res = run_cli("restore", bad.parent, "--cache-dir", tmp_path / "hub")
    assert res.exit_code == 1 and "does not match its hash" in res.stderr, res.stderr
    assert not cache_state(tmp_path / "hub")
