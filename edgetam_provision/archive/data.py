"""The bytes of a validated archive's data members (blobs, plain snapshot files), for the read
pass that hashes them: each member of an uncompressed archive where it lies, on a handle of its
own (`open_member`), or all of them in order through tarfile (`iter_data`), read again within the
bounds the scan was read within."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO

from ..errors import CorruptArchiveError
from .contents import ArchiveContents, DataMember
from .tar_io import Slice, members, open_tar
from .untrusted import READ_ERRORS, within


@contextlib.contextmanager
def open_member(contents: ArchiveContents, d: DataMember) -> Iterator[Slice]:
    """The bytes of one data member of an uncompressed archive, on a file handle of its own."""
    with open(contents.path, "rb", buffering=0) as fh:
        fh.seek(d.offset)
        yield Slice(fh, d.size, d.name)


def iter_data(contents: ArchiveContents) -> Iterator[tuple[DataMember, IO[bytes]]]:
    """Yield each data member (blobs, plain snapshot files) with a stream of its bytes, in archive
    order, through tarfile: what a compressed archive (one stream) needs. An uncompressed one's
    members can be opened where they lie instead, each on its own, with `open_member`."""
    by_name = {d.name: d for d in contents.data}
    try:
        tar, fobj = open_tar(contents.path, contents.compression, contents.bounds)
        with tar, fobj:
            for m in members(tar):
                within(contents.path, m, contents.bounds, None)
                d = by_name.get(m.name)
                stream = tar.extractfile(m) if d else None
                if d and stream:
                    yield d, stream
    except READ_ERRORS as exc:
        raise CorruptArchiveError(f"{contents.path.name}: damaged archive ({exc})",
                                  "fetch or copy the backup again; nothing was published") from None

