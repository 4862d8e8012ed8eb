"""Low-level reading of tar streams for `untrusted_tar`: tarfile over any compression, the
end-of-archive check tarfile itself skips, and bounded slices of an uncompressed tar."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import CorruptArchiveError
from .compression import open_decompressed

TAIL_KEEP = 256 * 1024  # > tarfile's read-ahead: enough to look back at the end-of-archive marker
END_MARKER = tarfile.BLOCKSIZE  # at least one zero block must follow the last member
CORRUPT_HINT = "fetch or copy the backup again; nothing was written"


class TailReader:
    """A forward-only stream that counts what it returned and keeps the last `TAIL_KEEP` bytes,
    so the end-of-archive marker can be checked after tarfile's read-ahead."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.pos, self.tail = raw, 0, b""

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.pos += len(data)
        self.tail = (self.tail + data)[-TAIL_KEEP:]
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> TailReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_tar(path: Path, kind: str) -> tuple[tarfile.TarFile, Any]:
    """tarfile over the archive: random access when uncompressed, a stream otherwise."""
    if kind == "none":
        fh = open(path, "rb")  # noqa: SIM115 - closed by the caller
        return tarfile.open(fileobj=fh, mode="r:"), fh
    reader = TailReader(open_decompressed(path, kind))
    return tarfile.open(fileobj=reader, mode="r|"), reader  # type: ignore[arg-type]


def check_end(tar: tarfile.TarFile, fobj: Any, path: Path) -> None:
    """After the last member only zero blocks may follow, and at least one must.

    tarfile stops quietly at a damaged header or at a clean cut between members; this catches
    both. Reading to the very end also makes gzip/xz/bz2 check their trailers.
    """
    if isinstance(fobj, TailReader):
        start = fobj.pos - len(fobj.tail)
        trailing = fobj.tail[tar.offset - start:]
        more = fobj.read
    else:
        fobj.seek(tar.offset)
        trailing, more = b"", fobj.read
    seen = 0
    while True:
        if trailing.strip(b"\0"):
            raise CorruptArchiveError(f"{path.name}: unreadable data after the last member at offset "
                                      f"{tar.offset} (damaged archive)", CORRUPT_HINT)
        seen += len(trailing)
        trailing = more(TAIL_KEEP)
        if not trailing:
            break
    if seen < END_MARKER:
        raise CorruptArchiveError(f"{path.name}: archive ends at offset {tar.offset} without its "
                                  "end-of-archive marker (cut short)", CORRUPT_HINT)


class Slice(io.RawIOBase):
    """`size` bytes of `fh` from its current position: a member inside an uncompressed tar."""

    def __init__(self, fh: BinaryIO, size: int, name: str) -> None:
        self.fh, self.left, self.name = fh, size, name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        view = memoryview(buffer)[: min(len(buffer), self.left)]
        got = self.fh.readinto(view) if len(view) else 0
        if len(view) and not got:
            raise CorruptArchiveError(f"archive ends inside {self.name}", "the archive is damaged")
        self.left -= got
        return got
