"""Low-level reading of tar streams for `untrusted_tar`: tarfile over any compression, within
`Bounds` fixed before the first byte; the end-of-archive check tarfile itself skips; bounded
slices of an uncompressed tar.

tarfile alone is not safe on a hostile stream: a GNU long-name or pax header is read whole into
memory, and a member header claiming 2^62 bytes makes its stream `seek` loop for ever at the end
of the data. `BoundedTarInfo` refuses such a header before tarfile reads it, `TailReader` stops a
stream at its declared total and at its end, and the scan checks each member's size before
tarfile skips past it.
"""

from __future__ import annotations

import io
import struct
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import CorruptArchiveError, UnsafeArchiveError
from .compression import ReadStream, open_decompressed

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from typing_extensions import Self

TAIL_KEEP = 256 * 1024  # > tarfile's read-ahead: enough to look back at the end-of-archive marker
END_MARKER = tarfile.BLOCKSIZE  # at least one zero block must follow the last member
CORRUPT_HINT = "fetch or copy the backup again; nothing was written"
BOUND_HINT = "this archive is not the backup it was declared to be; nothing was written"
#: bytes of one GNU long-name or pax extended header: the names a cache may hold are at most 900
#: bytes, and pax records beside them (times, xattrs of a hand-made tar) stay far below this
MAX_HEADER = 1024 * 1024
#: reads a stream answers with nothing before it is taken as read past its end (tarfile asks again
#: a few times at a clean end; its seek over a member claiming more than is left asks for ever)
EOF_READS = 16


@dataclass(frozen=True)
class Bounds:
    """What one archive may hold, fixed before its first byte is read (`trust.accept` derives
    it from the archive's declaration): the tar stream's total bytes, one member's size, and, from
    a manifest, each blob's exact size."""

    total: int
    member: int
    why: str  # where `total` comes from, said when it is exceeded
    sizes: dict[str, int] | None = None  # blob -> size, from a manifest


#: the fields of a ustar header block, in order (tarfile's `frombuf` slices the same offsets)
HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12x")
#: the member types of nearly every member of a cache's backup, whose header alone says all:
#: a file, a symbolic link, a folder (anything else takes tarfile's own path)
PLAIN_TYPES = frozenset((tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE))
BASE256 = (0o200, 0o377)  # first bytes of a number field in GNU's base-256 form
INVALID_HEADER: type[Exception] = tarfile.InvalidHeaderError  # type: ignore[attr-defined]  # not in typeshed


OCTAL = b"01234567 "
#: a header's mode, owner, time and device fields, as read (they repeat from member to member)
OWNERS: dict[tuple[bytes | str, ...], tuple[int, int, int, int, str, str, int, int]] = {}
MAX_OWNERS = 256


def _number(field: bytes) -> int:
    """tarfile's `nti` for an octal field (not base-256): up to the first NUL, ASCII, stripped."""
    end = field.find(b"\0")
    digits = field if end == -1 else field[:end]
    try:
        if not digits.translate(None, OCTAL):  # digits and spaces: `int` reads them as it reads the str
            return int(digits, 8) if digits.strip() else 0
        return int(digits.decode("ascii").strip() or "0", 8)
    except ValueError:
        raise INVALID_HEADER("invalid header") from None


class BoundedTarInfo(tarfile.TarInfo):
    """tarfile's TarInfo, refusing a GNU long-name/long-link or pax header over `MAX_HEADER`
    bytes before tarfile reads it into memory (the same two hooks on Python 3.8 to 3.13).

    Its `frombuf` reads a plain header (file, link, folder; octal numbers) in one `struct` unpack,
    with exactly tarfile's result and errors (a property test holds them equal) where names decode
    with tarfile's own "surrogateescape", which cannot fail (with other errors, tarfile reads it):
    40,000 members took 0.33 s of CPU against tarfile's 0.73 s, where the scan of many small files
    spent 40% of its time. Any other header is tarfile's own to read."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] not in PLAIN_TYPES or errors != "surrogateescape":
            return super().frombuf(buf, encoding, errors)  # (decoding never fails: errors come in its order)
        (name, mode, uid, gid, size, mtime, chksum, kind, linkname, _magic, uname, gname, major, minor,
         prefix) = HEADER.unpack(buf)
        if size[0] in BASE256 or chksum[0] in BASE256:
            return super().frombuf(buf, encoding, errors)
        checksum = _number(chksum)
        unsigned = 256 + sum(buf) - sum(chksum)  # the field counts as 8 spaces
        if checksum != unsigned and checksum not in tarfile.calc_chksums(buf):  # type: ignore[attr-defined]
            raise INVALID_HEADER("bad checksum")
        key = (mode, uid, gid, mtime, uname, gname, major, minor, encoding, errors)
        owner = OWNERS.get(key)
        if owner is None:  # read once for all the members that share them (nearly all do)
            if any(f[0] in BASE256 for f in (mode, uid, gid, mtime, major, minor)):
                return super().frombuf(buf, encoding, errors)
            owner = (_number(mode), _number(uid), _number(gid), _number(mtime),
                     _text(uname, encoding, errors), _text(gname, encoding, errors), _number(major),
                     _number(minor))
            if len(OWNERS) >= MAX_OWNERS:  # a hostile archive varies them: memory stays bounded
                OWNERS.clear()
            OWNERS[key] = owner
        obj = cls()
        obj.name = _text(name, encoding, errors)
        obj.mode, obj.uid, obj.gid, obj.mtime, obj.uname, obj.gname, obj.devmajor, obj.devminor = owner
        obj.size, obj.chksum = _number(size), checksum
        obj.type = kind
        obj.linkname = _text(linkname, encoding, errors)
        if kind == tarfile.DIRTYPE:
            obj.name = obj.name.rstrip("/")
        head = _text(prefix, encoding, errors)
        if head:
            obj.name = head + "/" + obj.name
        return obj

    # typeshed leaves out tarfile's private hooks, hence the two ignores below
    def _proc_gnulong(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        self._bounded("long-name")
        return super()._proc_gnulong(tar)  # type: ignore[misc,no-any-return]

    def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        self._bounded("pax")
        return super()._proc_pax(tar)  # type: ignore[misc,no-any-return]

    def _bounded(self, kind: str) -> None:
        if not 0 <= self.size <= MAX_HEADER:
            raise UnsafeArchiveError(f"unsafe archive member at offset {self.offset}: a {kind} header of "
                                     f"{self.size} bytes (at most {MAX_HEADER})", BOUND_HINT)


def _text(field: bytes, encoding: str, errors: str) -> str:
    """tarfile's `nts`: a NUL-terminated string field."""
    end = field.find(b"\0")
    return (field if end == -1 else field[:end]).decode(encoding, errors)


class TailReader:
    """A forward-only stream that counts what it returned and keeps the last `TAIL_KEEP` bytes,
    so the end-of-archive marker can be checked after tarfile's read-ahead. It stops at the
    bounds' total, and at reads past its end (a member claiming more than is left)."""

    def __init__(self, raw: ReadStream, bounds: Bounds | None = None, name: str = "") -> None:
        self.raw, self.pos, self.tail = raw, 0, bytearray()
        self.bounds, self.name, self.empty = bounds, name, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.pos += len(data)
        if self.bounds is not None and self.pos > self.bounds.total:
            raise UnsafeArchiveError(f"{self.name}: holds more than {self.bounds.total} bytes of tar data "
                                     f"({self.bounds.why})", BOUND_HINT)
        if not data and n:
            self.empty += 1
            if self.empty > EOF_READS:
                raise CorruptArchiveError(f"{self.name}: archive ends inside a member at offset "
                                          f"{self.pos} (cut short)", CORRUPT_HINT)
        self.tail += data
        if len(self.tail) > 2 * TAIL_KEEP:  # trimmed now and then, not copied on every read
            del self.tail[:-TAIL_KEEP]
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> TailReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_tar(path: Path, kind: str, bounds: Bounds | None = None,
             ) -> tuple[tarfile.TarFile, BinaryIO | TailReader]:
    """tarfile over the archive: random access when uncompressed, a stream otherwise; every
    extended header bounded, and a stream within `bounds`."""
    fh: BinaryIO | TailReader = (open(path, "rb") if kind == "none"  # noqa: SIM115 - closed by the caller
                                 else TailReader(open_decompressed(path, kind), bounds, path.name))
    try:
        if isinstance(fh, TailReader):
            # typeshed asks every fileobj for write/tell/seek; a "r|" stream is only read and closed
            return tarfile.open(fileobj=fh, mode="r|", tarinfo=BoundedTarInfo), fh  # type: ignore[call-overload]
        return tarfile.open(fileobj=fh, mode="r:", tarinfo=BoundedTarInfo), fh
    except BaseException:
        fh.close()
        raise


def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of `tar` one by one, none kept: tarfile's own iteration keeps every header it
    read in ``tar.members`` (a few hundred bytes each, 200 MB for a revision of 100,000 files)."""
    while (m := tar.next()) is not None:
        tar.members.clear()  # type: ignore[attr-defined]  # tarfile's own list, which typeshed leaves out
        yield m


def check_end(tar: tarfile.TarFile, fobj: BinaryIO | TailReader, path: Path) -> None:
    """After the last member only zero blocks may follow, and at least one must.

    tarfile stops quietly at a damaged header or at a clean cut between members; this catches
    both. Reading to the very end also makes gzip/xz/bz2 check their trailers.
    """
    trailing: bytes | bytearray
    more: Callable[[int], bytes]
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

    def __init__(self, fh: io.RawIOBase, size: int, name: str) -> None:
        self.fh, self.left, self.name = fh, size, name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        whole = memoryview(buffer)
        view = whole[: min(len(whole), self.left)]
        got = (self.fh.readinto(view) or 0) if len(view) else 0
        if len(view) and not got:
            raise CorruptArchiveError(f"archive ends inside {self.name}", "the archive is damaged")
        self.left -= got
        return got
