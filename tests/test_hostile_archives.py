"""Every archive is hostile: each attack is refused before anything is written.

For each attack the restore must exit with the documented code, name the bad member, leave the
cache byte-identical, and leave everything outside the cache (a sentinel file) untouched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from builders import write_tar
from conftest import examples, run_cli, run_cli_process, tree_state
from hostile_backups import genuine_backup
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetam_provision.archive import untrusted
from edgetam_provision.errors import CorruptArchiveError, UnsafeArchiveError

R = "models--org--tiny"
MISSING = "ab" * 32  # a well-formed blob name that no archive or cache holds


@pytest.fixture
def scene(cache, tmp_path):
    """A cache to restore into (holding org/other), a sentinel beside it, and org/tiny's archive."""
    g = genuine_backup(cache, tmp_path / "genuine")
    work = tmp_path / "work"
    target = work / "cache"
    target.mkdir(parents=True)
    shutil.copytree(cache / "models--org--other", target / "models--org--other", symlinks=True)
    (work / "sentinel.txt").write_text("untouched")
    return {"work": work, "cache": target, "members": g.members, "tmp": tmp_path, "archive": g.archive,
            "commit": g.commit}


def blob_member(scene, big: bool = True) -> tuple[tarfile.TarInfo, bytes]:
    return next((m, d) for m, d in scene["members"]
                if m.isreg() and "/blobs/" in m.name and (len(m.name.rsplit("/", 1)[1]) == 64) == big)


def reg(name: str, data: bytes = b"evil", mode: int = 0o644, **pax: str) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.pax_headers = len(data), mode, dict(pax)
    return ti, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE, **pax: str):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.pax_headers = kind, target, dict(pax)
    return ti, None


def special(name: str, kind: bytes):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    return ti, None


def attack_cases(scene) -> dict[str, tuple[list, int, str]]:
    """name -> (extra members appended to a genuine archive, exit code, text the error names)."""
    c = scene["commit"]
    snap = f"{R}/snapshots/{c}"
    big, big_data = blob_member(scene)
    other_blob = next(p.name for p in (scene["cache"] / "models--org--other" / "blobs").iterdir())
    return {
        "dotdot": ([reg("../x")], 3, "../x"),
        "inner-dotdot": ([reg("a/../../x")], 3, "a/../../x"),
        "absolute-path": ([reg("/tmp/provision-abs-evil")], 3, "/tmp/provision-abs-evil"),
        "absolute-symlink": ([link(f"{snap}/evil.json", "/etc/passwd")], 3, "evil.json"),
        "escaping-symlink": ([link(f"{snap}/evil.json", "../../../../../../../etc/passwd")], 3,
                             "evil.json"),
        "dir-link-then-file": ([link(f"{R}/d", ".."), reg(f"{R}/d/f")], 3, f"{R}/d"),
        "hardlink-absolute": ([link(f"{R}/blobs/{MISSING}", "/etc/passwd", tarfile.LNKTYPE)], 3,
                              MISSING),
        "hardlink-outside": ([link(f"{R}/blobs/{MISSING}", "../../outside", tarfile.LNKTYPE)], 3,
                             MISSING),
        "hardlink-then-overwrite": ([link(f"{R}/blobs/{MISSING}", big.name, tarfile.LNKTYPE),
                                     reg(f"{R}/blobs/{MISSING}", b"overwrite")], 3, MISSING),
        "char-device": ([special(f"{R}/blobs/{MISSING}", tarfile.CHRTYPE)], 3, "character device"),
        "block-device": ([special(f"{R}/blobs/{MISSING}", tarfile.BLKTYPE)], 3, "block device"),
        "fifo": ([special(f"{R}/blobs/{MISSING}", tarfile.FIFOTYPE)], 3, "FIFO"),
        "setuid-mode": ([reg(f"{R}/blobs/{MISSING}", mode=0o4755)], 3, MISSING),
        "world-writable": ([reg(f"{R}/.no_exist/{c}/x.json", b"", mode=0o666)], 3, "odd mode"),
        "duplicate-name": ([reg(big.name, big_data[::-1])], 3, "duplicate"),
        "blob-is-symlink": ([link(f"{R}/blobs/{MISSING}", "../../../x")], 3, MISSING),
        "link-to-other-repo": ([link(f"{snap}/stolen.bin",
                                     f"../../../models--org--other/blobs/{other_blob}")], 3,
                               "stolen.bin"),
        "link-to-absent-blob": ([link(f"{snap}/ghost.bin", f"../../blobs/{MISSING}")], 3, "ghost.bin"),
        "backslash-name": ([reg(f"{R}\\..\\..\\evil")], 3, "backslash"),
        "nul-in-name": ([reg(f"{R}/blobs/x", path=f"{R}/blobs/ab\x00cd")], 3, "control character"),
        "pax-path-override": ([reg(f"{R}/blobs/{MISSING}", path="../../pax-evil")], 3, "pax-evil"),
        "pax-linkpath-override": ([link(f"{snap}/pax.json", f"../../blobs/{big.name[-64:]}",
                                        linkpath="/etc/shadow")], 3, "pax.json"),
        "file-outside-layout": ([reg(f"{R}/evil.sh", b"#!/bin/sh\n")], 3, "evil.sh"),
        "non-hex-ref": ([reg(f"{R}/refs/dev", b"main-branch\n")], 3, "refs/dev"),
        "ref-to-unknown-commit": ([reg(f"{R}/refs/dev", b"0" * 40)], 3, "refs/dev"),
        "huge-ref": ([reg(f"{R}/refs/dev", b"a" * 5000)], 3, "refs/dev"),
        "outside-any-repo": ([reg("etc/cron.d/evil")], 3, "etc/cron.d/evil"),
        # what the scan must refuse because no cache can hold it (it once ended half-published)
        "ref-file-and-folder": ([reg(f"{R}/refs/main/x", b"a" * 40)], 3, "below a file"),
        "ref-folder-then-file": ([reg(f"{R}/refs/dev/x", c.encode()), reg(f"{R}/refs/dev", c.encode())], 3,
                                 "where other members need a folder"),
        "link-after-its-members": ([reg(f"{snap}/sub2/inner.json", b"{}"),
                                    link(f"{snap}/sub2", f"../../blobs/{big.name[-64:]}")], 3,
                                   "where other members need a folder"),
        "component-too-long": ([reg(f"{snap}/{'a' * 300}.json", b"{}")], 3, "component longer than 255"),
        "name-too-long": ([reg(f"{snap}/" + "/".join(["d" * 100] * 10) + "/x.json", b"{}")], 3,
                          "longer than 900 bytes"),
    }


CASES = ["dotdot", "inner-dotdot", "absolute-path", "absolute-symlink", "escaping-symlink",
         "dir-link-then-file", "hardlink-absolute", "hardlink-outside", "hardlink-then-overwrite",
         "char-device", "block-device", "fifo", "setuid-mode", "world-writable", "duplicate-name",
         "blob-is-symlink", "link-to-other-repo", "link-to-absent-blob", "backslash-name",
         "nul-in-name", "pax-path-override", "pax-linkpath-override", "file-outside-layout",
         "non-hex-ref", "ref-to-unknown-commit", "huge-ref", "outside-any-repo", "ref-file-and-folder",
         "ref-folder-then-file", "link-after-its-members", "component-too-long", "name-too-long"]


def assert_refused(scene, archive: Path, code: int, names: str, after_lock: bool = False) -> None:
    """Refused with `code`, naming `names`; nothing changed (bar the lock file, once taken)."""
    before = tree_state(scene["work"])
    res = run_cli("restore", archive, "--cache-dir", scene["cache"])
    assert res.exit_code == code, res.stderr
    assert names in res.stderr, res.stderr
    assert "\nerror: " in "\n" + res.stderr and "\nhint: " in res.stderr
    after = tree_state(scene["work"])
    if after_lock:
        for p in ("cache/.locks", "cache/.locks/provision.lock"):
            after.pop(p)
    assert after == before
    assert (scene["work"] / "sentinel.txt").read_text() == "untouched"
    assert not Path("/tmp/provision-abs-evil").exists()
    assert not (scene["tmp"] / "x").exists() and not (scene["tmp"] / "pax-evil").exists()


@pytest.mark.parametrize("filter_layer", [True, False], ids=["with-data-filter", "python-without-it"])
@pytest.mark.parametrize("case", CASES)
def test_attack_archive_is_refused_and_nothing_is_written(scene, case, filter_layer, monkeypatch):
    """Also where tarfile has no data filter (Python 3.11.2, as Debian 12 ships): our checks alone."""
    if not filter_layer:
        monkeypatch.setattr(untrusted, "DATA_FILTER", None)
    extra, code, names = attack_cases(scene)[case]
    archive = write_tar(scene["tmp"] / "in" / f"{case}.tar", scene["members"] + extra)
    assert_refused(scene, archive, code, names)


def test_attack_member_first_is_refused_too(scene):
    """Order must not matter: a bad member before the good ones is caught just the same."""
    extra, code, names = attack_cases(scene)["pax-path-override"]
    archive = write_tar(scene["tmp"] / "in" / "first.tar", extra + scene["members"])
    assert_refused(scene, archive, code, names)


def test_sparse_member_is_refused(scene):
    ti, _ = reg(f"{R}/blobs/{MISSING}", b"")
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                      "GNU.sparse.name": f"{R}/blobs/{MISSING}", "GNU.sparse.realsize": "4096"}
    body = b"1\n0\n4096\n".ljust(512, b"\0")
    ti.size = len(body)
    archive = write_tar(scene["tmp"] / "in" / "sparse.tar", scene["members"] + [(ti, body)])
    assert_refused(scene, archive, 3, "sparse")


def test_blob_whose_bytes_do_not_match_its_name_is_refused(scene):
    big, _data = blob_member(scene)
    members = [(m, (d[:-1] + bytes([d[-1] ^ 1])) if m.name == big.name else d)
               for m, d in scene["members"]]
    archive = write_tar(scene["tmp"] / "in" / "flipped.tar", members)
    assert_refused(scene, archive, 1, big.name.rsplit("/", 1)[1], after_lock=True)


def test_member_larger_than_the_manifest_says_is_refused(scene):
    big, _data = blob_member(scene, big=False)
    archive = scene["archive"]
    write_tar(archive, [reg(m.name, d + b" ") if m.name == big.name else (m, d)
                        for m, d in scene["members"]])
    manifest_path = archive.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["archives"][archive.name]["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    assert_refused(scene, archive, 3, "the manifest says")


def test_truncated_archive_is_refused(scene):
    archive = write_tar(scene["tmp"] / "in" / "cut.tar", scene["members"])
    data = archive.read_bytes()
    big, _ = blob_member(scene)
    archive.write_bytes(data[: big.offset_data + 1000])
    assert_refused(scene, archive, 4, "cut.tar")


def test_not_a_tar_at_all_is_refused(scene):
    archive = scene["tmp"] / "in" / "junk.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"\x1f\x8b" + b"junk" * 100)
    assert_refused(scene, archive, 4, "junk.tar.gz")


def test_a_name_that_is_not_utf8_is_shown_escaped_even_on_a_strict_ascii_terminal(scene):
    """A skipped member named in bytes that are not UTF-8, reported on a terminal that takes ASCII
    only: the restore still succeeds (it once crashed after publishing)."""
    c = scene["commit"]
    odd = tarfile.TarInfo(f"{R}/.no_exist/{c}/caf\udce9.json")  # b"caf\xe9.json", Latin-1
    archive = write_tar(scene["tmp"] / "in" / "odd.tar", [*scene["members"], (odd, b"")],
                        fmt=tarfile.GNU_FORMAT)
    res = run_cli_process("restore", archive, "--cache-dir", scene["cache"],
                          env={"PYTHONIOENCODING": "ascii:strict", "LC_ALL": "C"})
    assert res.returncode == 0, res.stderr
    assert "caf\\udce9.json" in res.stdout + res.stderr


#: path components: mostly ones a cache holds, some that make a name or a link target unsafe
SAFE = st.sampled_from(["a", "é", "x.json"])
PART = st.one_of(SAFE, SAFE, SAFE, SAFE,
                 st.sampled_from(["..", ".", "", "a\\b", "/", R, "blobs", "snapshots"]))


@pytest.mark.skipif(untrusted.DATA_FILTER is None, reason="this Python's tarfile has no data filter")
@settings(max_examples=examples(ci=200, dev=50), deadline=None)
@given(path=st.lists(PART, min_size=1, max_size=4), up=st.sampled_from([0, 0, 0, -2, -1, 1]),
       via=st.lists(PART, max_size=2),
       prefix=st.sampled_from(["", "./", "hub/", "", "/", "../"]))
def test_what_the_scan_keeps_as_a_blob_or_snapshot_link_the_data_filter_accepts(tmp_path_factory, path, up,
                                                                                   via, prefix):
    """Blob files and snapshot links skip tarfile's data filter (it walks every path component with
    lstat): for any such member the scan accepts, however its name and target are made, the filter
    would have accepted it too, so skipping it refuses nothing less."""
    blob, commit = hashlib.sha256(b"x").hexdigest(), "c" * 40
    rel = "/".join(path)
    target = "/".join([".."] * max(0, rel.count("/") + 2 + up) + via + ["blobs", blob])
    members = [reg(f"{prefix}{R}/blobs/{blob}", b"x"), link(f"{prefix}{R}/snapshots/{commit}/{rel}", target)]
    archive = write_tar(tmp_path_factory.mktemp("pinned") / "a.tar", members)
    try:
        untrusted.scan_archive(archive)
    except (UnsafeArchiveError, CorruptArchiveError):
        return
    with tarfile.open(archive) as tar:
        for m in tar:
            untrusted.DATA_FILTER(m, untrusted.FILTER_ROOT)  # raises if it would refuse
