"""The scan's own reading of a plain tar header is tarfile's reading, to the letter.

`BoundedTarInfo.frombuf` reads file, link and folder headers in one unpack (for speed: issue 26's
100,000 small files); whatever header it is given, it must give what `tarfile.TarInfo.frombuf`
gives — the same fields, or the same error — so the acceptance rule sees the same members.
"""

from __future__ import annotations

import tarfile

from hypothesis import example, given
from hypothesis import strategies as st

from edgetam_provision.archive.tar_io import BoundedTarInfo

FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
          "devmajor", "devminor")
ENCODING, ERRORS = "utf-8", "surrogateescape"  # what tarfile reads with


def reading(read: object, buf: bytes) -> tuple[str, object]:
    try:
        info = read(buf, ENCODING, ERRORS)  # type: ignore[operator]
    except Exception as exc:
        return "error", (type(exc), str(exc))
    return "member", tuple(getattr(info, f) for f in FIELDS)


names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=120)


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """A header tarfile writes (any type, format and name), then bytes of it overwritten at will."""
    info = tarfile.TarInfo(draw(names))
    info.type = draw(st.sampled_from([tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE,
                                      tarfile.AREGTYPE, tarfile.FIFOTYPE]))
    info.size = draw(st.integers(0, 2**40)) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    info.linkname = draw(names) if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    info.mode = draw(st.integers(0, 0o7777))
    info.mtime = draw(st.integers(0, 2**33))
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    try:
        blocks = info.tobuf(fmt, ENCODING, ERRORS)
    except ValueError:  # a name this format cannot hold
        blocks = tarfile.TarInfo("x").tobuf(tarfile.USTAR_FORMAT, ENCODING, ERRORS)
    buf = bytearray(blocks[-tarfile.BLOCKSIZE:])  # the member's own header (after any extended ones)
    for at, byte in draw(st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), max_size=6)):
        buf[at] = byte
    if draw(st.booleans()):  # make the checksum right again, so the fields behind it are read
        buf[148:156] = b" " * 8
        buf[148:156] = b"%06o\0 " % (sum(buf) & 0o777777)
    return bytes(buf)


@given(headers())
def test_a_plain_header_reads_as_tarfile_reads_it(buf: bytes) -> None:
    first = reading(BoundedTarInfo.frombuf, buf)  # then again: its owner fields as remembered
    assert first == reading(tarfile.TarInfo.frombuf, buf) == reading(BoundedTarInfo.frombuf, buf)


@given(st.binary(min_size=0, max_size=600), st.sampled_from([b"0", b"2", b"5"]))
@example(b"x" * 124 + b"1 2" + b"\0" * 385, b"0")  # a size field with a space inside
def test_any_block_reads_as_tarfile_reads_it(raw: bytes, kind: bytes) -> None:
    buf = raw[:156] + kind + raw[157:] if len(raw) > 157 else raw
    assert reading(BoundedTarInfo.frombuf, buf) == reading(tarfile.TarInfo.frombuf, buf)
