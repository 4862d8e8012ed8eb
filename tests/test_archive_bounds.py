"""Reading an archive is bounded by what was declared before its first byte (docs/accepted.md).

Bombs and lying headers end quickly, in little memory, with exit 3 or 4: measured in a process of
their own (peak RSS from `getrusage`; time as "it finishes" within a subprocess timeout, never a
timed assertion). And every error of every compression is exit 4, never 70.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
import zstandard
from conftest import run_cli
from hostile_backups import R, genuine_backup, tar_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetam_provision.archive.tar_io import MAX_HEADER
from edgetam_provision.trust.accept import HANDMADE_FLOOR

FINISHES_S = 60  # the unbounded reader ran for minutes or for ever on these
MB = 1024 * 1024
PEAK_MB = 200  # the unbounded reader held the whole header: 2-3x its 256 MiB


def run_measured(*args: str | Path) -> tuple[int, float, str]:
    """`provision ARGS` in a process of its own: (exit code, its peak RSS in MB, stderr)."""
    code = ("import resource, subprocess, sys;"
            "p = subprocess.run([sys.executable, '-m', 'edgetam_provision', *sys.argv[1:]],"
            f" capture_output=True, text=True, timeout={FINISHES_S});"
            "sys.stderr.write(p.stderr);"
            "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=FINISHES_S + 10)
    assert proc.returncode == 0, proc.stderr  # the inner run finished before its timeout
    rc, peak = proc.stdout.split()
    return int(rc), int(peak) / (1024 * 1024 if sys.platform == "darwin" else 1024), proc.stderr


def compressed(head: bytes, zeros: int, kind: str) -> bytes:
    """`head` and then `zeros` zero bytes, compressed without holding them all."""
    c = zlib.compressobj(6, zlib.DEFLATED, 31) if kind == "gzip" else zstandard.ZstdCompressor().compressobj()
    out, chunk = [c.compress(head)], bytes(MB)
    out.extend(c.compress(chunk) for _ in range(zeros // MB))
    return b"".join([*out, c.compress(bytes(zeros % MB)), c.flush()])


@pytest.fixture
def genuine(cache, tmp_path):
    return genuine_backup(cache, tmp_path / "genuine")


def test_a_long_name_header_of_256_mib_ends_at_once_in_little_memory(tmp_path):
    """1.4 MB of gzip whose GNU long-name header is 1.5 GB of zeros once reached 4.3 GB RSS."""
    size = 256 * MB
    head = tarfile.TarInfo("././@LongLink")
    head.type, head.size = tarfile.GNUTYPE_LONGNAME, size
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(compressed(head.tobuf(tarfile.GNU_FORMAT), size, "gzip"))
    for args in (["check", archive], ["restore", archive, "--cache-dir", tmp_path / "c"]):
        rc, peak, err = run_measured(*args)
        assert rc == 3 and f"long-name header of {size} bytes (at most {MAX_HEADER})" in err, err
        assert peak < PEAK_MB, f"{args[0]}: peak RSS {peak:.0f} MB"
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_backup_without_a_manifest_that_expands_past_its_bound_is_refused_early(genuine, tmp_path, kind):
    """A genuine tar followed by zeros past the bound (a 936 KB .tar.zst of 20 GB once took 109 s
    and was accepted). Without a manifest it may expand to HANDMADE_FLOOR bytes (or 100x its size)."""
    archive = tmp_path / ("bomb.tar.gz" if kind == "gzip" else "bomb.tar.zst")
    zeros = HANDMADE_FLOOR + 64 * MB  # past the bound is all it takes: more only costs compressing
    data = compressed(tar_bytes(genuine.members), zeros, kind)
    archive.write_bytes(data)
    assert 100 * len(data) < HANDMADE_FLOOR < zeros
    rc, peak, err = run_measured("restore", archive, "--cache-dir", tmp_path / "c")
    assert rc == 3 and f"holds more than {HANDMADE_FLOOR} bytes of tar data" in err, err
    assert peak < PEAK_MB
    assert not (tmp_path / "c" / R).exists()


def test_a_declared_backup_that_expands_past_its_declaration_is_refused_early(genuine, tmp_path):
    folder = genuine.archive.parent
    data = compressed(tar_bytes(genuine.members), 1024 * MB, "zstd")
    archive = folder / genuine.archive.name
    archive.write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["archives"][archive.name].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rc, _, err = run_measured("check", folder)
    assert rc == 3 and "what its manifest declares: 3 files" in err, err


def test_a_member_claiming_more_than_the_stream_holds_ends_at_its_end(genuine, tmp_path):
    """A complete gzip stream of a tar cut inside a member declared (and claiming) 2^40 bytes:
    tarfile's stream seek once looped for ever at the end of the data."""
    folder = genuine.archive.parent
    big = next(m for m, _ in genuine.members if m.isreg() and len(m.name.rsplit("/", 1)[1]) == 64)
    ti = tarfile.TarInfo(big.name)
    ti.size = 2**40
    raw = tar_bytes([(m, d) for m, d in genuine.members if m.name != big.name])
    data = gzip.compress(ti.tobuf(tarfile.PAX_FORMAT) + raw[:4096], 1)
    archive = folder / genuine.archive.name
    archive.write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["archives"][archive.name]
    entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    for f in entry["files"]:
        f["size"] = 2**40 if f["blob"] == big.name.rsplit("/", 1)[1] else f["size"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rc, _, err = run_measured("check", folder)
    assert rc == 4 and "ends inside a member" in err, err
    rc, _, err = run_measured("restore", folder, "--cache-dir", tmp_path / "c")
    assert rc == 5 and "needs" in err, err  # 1 TiB declared: refused for space before a byte is read


# ---------------------------------------------------------------------------- every compression's errors

def zstd_with_a_bad_checksum(raw: bytes) -> bytes:
    data = bytearray(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(raw))
    data[-1] ^= 0xFF  # the frame's checksum: every byte before it decompresses
    return bytes(data)


@pytest.mark.parametrize("case", ["zstd-checksum", "zstd-garbage", "gzip-garbage", "bz2-garbage",
                                  "xz-garbage"])
def test_every_damaged_compression_is_exit_4(genuine, tmp_path, case):
    raw = tar_bytes(genuine.members)
    magic = {"zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
    kind = case.split("-")[0]
    data = zstd_with_a_bad_checksum(raw) if case == "zstd-checksum" else magic[kind] + b"\x07" * 4000
    archive = tmp_path / "in" / "damaged.tar"
    archive.parent.mkdir()
    archive.write_bytes(data)
    for args in (["check", archive], ["restore", archive, "--cache-dir", tmp_path / "c"]):
        res = run_cli(*args)
        assert res.exit_code == 4 and "damaged.tar" in res.stderr, res.stderr
    assert not (tmp_path / "c" / R).exists()


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                                  tarfile.XGLTYPE], ids=["long-name", "long-link", "pax", "pax-global"])
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_every_extended_header_is_bounded_before_it_is_read(tmp_path, kind, suffix):
    head = tarfile.TarInfo("././@LongLink")
    head.type, head.size = kind, MAX_HEADER + 1
    fmt = tarfile.GNU_FORMAT if kind in tarfile.GNU_TYPES else tarfile.PAX_FORMAT
    raw = head.tobuf(fmt) + bytes(MAX_HEADER + 512) + tarfile.TarInfo("x").tobuf(fmt) + bytes(1024)
    archive = tmp_path / f"header{suffix}"
    archive.write_bytes(gzip.compress(raw, 1) if suffix == ".tar.gz" else raw)
    res = run_cli("check", archive)
    assert res.exit_code == 3 and f"header of {MAX_HEADER + 1} bytes" in res.stderr, res.stderr


MAGIC = {"none": b"", "gzip": b"\x1f\x8b\x08", "zstd": b"\x28\xb5\x2f\xfd", "bz2": b"BZh9",
         "xz": b"\xfd7zXZ\x00"}


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(MAGIC)), body=st.binary(max_size=2048))
def test_random_bytes_in_any_compression_are_refused_never_a_crash(tmp_path_factory, kind, body):
    archive = tmp_path_factory.mktemp("random") / "x.tar"
    archive.write_bytes(MAGIC[kind] + body)
    res = run_cli("check", archive)
    assert res.exit_code in (3, 4), res.stderr
