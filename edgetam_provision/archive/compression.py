"""The compressions a backup may use: told apart by magic bytes, opened as streams.

Written: none (default: weights do not compress), gzip, zstd. Read: those, plus bz2 and xz,
which people use for hand-made backups (``tar cjf`` / ``tar cJf``).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import BinaryIO, Protocol, cast

from ..errors import UsageError

SUFFIX = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bz2"),
         (b"\xfd7zXZ\x00", "xz"))


class DamagedStream(ValueError):
    """A compressed stream that cannot be decompressed (what zstandard's own error becomes)."""


#: the exceptions a damaged compressed stream raises while it is read
STREAM_ERRORS: tuple[type[BaseException], ...] = (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError,
                                                  OSError, DamagedStream)
#: what a compressor wraps: the archive's raw output (a file, or pack's hashing writer)
RawOut = BinaryIO | io.RawIOBase
Compress = Callable[[RawOut], BinaryIO]


class ReadStream(Protocol):
    """What `open_decompressed` gives: the archive's tar bytes, read forward, then closed."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def zstandard_module() -> ModuleType:
    """The optional `zstandard` package, or a usage error that says how to get it."""
    try:
        import zstandard
    except ImportError:
        raise UsageError("zstd needs the 'zstandard' package",
                         "pip install 'edgetam-provision[zstd]' (or, for a new backup, compress with gzip "
                         "or none)") from None
    return zstandard


def compression_of(path: Path) -> str:
    """none, gzip, zstd, bz2 or xz: by the file's magic bytes, not its name."""
    with open(path, "rb") as fh:
        return compression_of_head(fh.read(6))


def compression_of_head(head: bytes) -> str:
    """The compression the first bytes of a file announce."""
    return next((name for magic, name in MAGIC if head.startswith(magic)), "none")


def compressor(kind: str) -> Compress | None:
    """A function wrapping a raw output stream in `kind`'s compressor (None for "none")."""
    if kind not in SUFFIX:
        raise UsageError(f"unknown compression {kind!r}", "use none, gzip or zstd")
    if kind == "gzip":  # a GzipFile is a binary stream; typeshed does not derive it from IO[bytes]
        return lambda raw: cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0))
    if kind == "zstd":
        zstd = zstandard_module()
        return lambda raw: cast(BinaryIO, zstd.ZstdCompressor(level=3).stream_writer(raw, closefd=False))
    return None


def open_decompressed(path: Path, kind: str) -> ReadStream:
    """A read stream of the archive's tar bytes. For zstd the file handle closes with the stream."""
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    if kind == "zstd":
        zstd = zstandard_module()
        raw = open(path, "rb")  # noqa: SIM115 - closed by the reader (closefd=True)
        try:  # frames one after another (pzstd, zstd -T, concatenated files) are one stream
            reader = zstd.ZstdDecompressor().stream_reader(raw, closefd=True, read_across_frames=True)
        except TypeError:  # zstandard before 0.19: no such argument
            reader = zstd.ZstdDecompressor().stream_reader(raw, closefd=True)
        return _ZstdReader(reader, zstd.ZstdError)
    return open(path, "rb")


class _ZstdReader:
    """zstandard's stream reader, its `ZstdError` (corrupt data, a bad checksum) a `DamagedStream`."""

    def __init__(self, reader: ReadStream, error: type[Exception]) -> None:
        self.reader, self.error = reader, error

    def read(self, n: int = -1) -> bytes:
        try:
            return self.reader.read(n)
        except self.error as exc:
            raise DamagedStream(f"zstd: {exc}") from None

    def close(self) -> None:
        self.reader.close()
