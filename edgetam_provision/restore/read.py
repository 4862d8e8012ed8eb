"""The read pass of a restore: every byte of every archive hashed, the cache compared with it.

A blob is hashed against its name while it is read out of the archive. A blob the cache lacks,
or holds damaged, is staged (when staging). A blob it holds is hashed against its name too (on a
thread of its own), or, in a compressed stream that cannot be read twice, compared byte for byte.
Small blobs (up to `SMALL` bytes: configs, tokenizers, a dataset's many files) are read whole, many
at once, hashed and written in one go: a thread per file costs more than its bytes; the tiniest
(below `TINY`) all on one thread.
Plain snapshot files of `tar -h` backups are hashed both ways (sha256, git sha1) and become the
blob they match.
"""

from __future__ import annotations

import contextlib
import filecmp
import functools
import io
import os
import queue
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

from ..archive.contents import ArchiveContents, DataMember
from ..archive.data import iter_data, open_member
from ..console import ProgressFn
from ..errors import CorruptArchiveError, IntegrityError
from ..integrity.hashing import blob_hasher, blob_matches
from ..parallel import WriteBehind, in_background, run_all, workers


class Member(Protocol):
    """A member's bytes as read here: `open_member`'s slice of the archive file, or tarfile's
    stream (a BufferedReader, which typeshed calls IO[bytes])."""

    def readinto(self, buffer: bytearray, /) -> int: ...


Reopen = Callable[[], AbstractContextManager[Member]]
SMALL = 256 * 1024  # a blob up to this size is read whole, hashed, compared and written in one go
# below this, hashlib hashes holding the GIL: such blobs go on one thread, as threads would only take
# turns (and, creating files in one folder, wait on its lock): 100,000 tiny files read in 1.6 s on
# one thread, 3.1 s on two (tmpfs); from 16 KB on, two threads gain 10-20%
TINY = 2048
SPAN = 1024 * 1024  # bytes of an uncompressed archive read at once for a batch of small blobs (one PIECE)


def damaged(contents: ArchiveContents, what: str) -> IntegrityError:
    """The error for bytes of a backup that do not check: nothing was written yet."""
    return IntegrityError(f"{contents.path.name}: {what}",
                          "the backup is damaged; fetch or copy it again — nothing was written")


@dataclass
class ReadResult:
    """What hashing one archive found: the state of each blob, and the blobs of plain files.

    A blob that is not present is staged (when staging) at ``<staging>/<folder>/<blob>`` (in a repo
    folder the cache lacks, ``<staging>/<folder>/blobs/<blob>``: the folder is built there whole),
    or, from a plain file of a ``tar -h`` backup, where `staged` says."""

    staging: Path | None = None
    blobs: dict[tuple[str, str], str] = field(default_factory=dict)  # (folder, blob) -> new|present|repair
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)
    copies: dict[tuple[str, str], str] = field(default_factory=dict)  # (folder, snapshot path) -> blob
    staged: dict[tuple[str, str], str] = field(default_factory=dict)  # (folder, blob) -> file elsewhere
    whole: set[str] = field(default_factory=set)  # repo folders the cache lacks: staged whole

    def staged_file(self, folder: str, blob: str) -> str | None:
        """Where blob `blob` of `folder` waits to be published (None: it is not staged)."""
        key = (folder, blob)
        if key in self.staged:
            return self.staged[key]
        if self.staging is None or self.blobs.get(key, "present") == "present":
            return None
        return self.stage_path(folder, blob)

    def stage_path(self, folder: str, blob: str) -> str:
        inside = f"{folder}/blobs" if folder in self.whole else folder
        return f"{self.staging}/{inside}/{blob}"

    def staged_folder(self, folder: str) -> str | None:
        """Where repo folder `folder`, which the cache lacks, is built whole (None: it is not)."""
        return f"{self.staging}/{folder}" if self.staging is not None and folder in self.whole else None


class ArchiveReader:
    """Hash every data member; compare with the cache; stage what must be written (if staging).

    Members of an uncompressed archive sit at known offsets: each big one is read by a thread of its
    own (`parallel.workers()` at once, the biggest first), and a blob the cache holds is checked by
    hashing the cached copy on another thread; small ones go in batches of neighbours read in one
    piece. A compressed archive is one stream, read in order.
    """

    PIECE = 1024 * 1024  # read size: 3 pieces in flight per member stay in the CPU's caches

    def __init__(self, cache: Path, staging: Path | None) -> None:
        self.cache, self.staging = cache, staging
        self.found = ReadResult(staging)
        self.spare: queue.SimpleQueue[bytearray] = queue.SimpleQueue()  # read buffers, reused
        self.held: dict[str, set[str]] = {}  # repo folder -> names in the cache's blobs/ (one listing)

    def archive(self, contents: ArchiveContents, progress: ProgressFn) -> None:
        progress(f"checking every byte of {contents.path.name}")
        for folder in contents.repos:
            try:
                self.held[folder] = set(os.listdir(self.cache / folder / "blobs"))
            except OSError:  # no such folder yet (or not one): the cache holds none of its blobs
                self.held[folder] = set()
            if self.staging is not None:
                if folder in self.found.whole or not os.path.lexists(self.cache / folder):
                    self.found.whole.add(folder)
                (self.staging / folder / ("blobs" if folder in self.found.whole else "")).mkdir(
                    parents=True, exist_ok=True)
        if contents.compression == "none":
            small = sorted((d for d in contents.data if _small(d)), key=lambda d: d.offset)
            big = sorted((d for d in contents.data if not _small(d)), key=lambda d: -d.size)
            tiny = [d for d in small if d.size < TINY]
            jobs = [functools.partial(self._member_at, contents, d) for d in big]
            if tiny:  # one job: on one thread
                jobs.append(functools.partial(self._small_batches, contents, _batches(tiny)))
            jobs += [functools.partial(self._small_batch, contents, batch)
                     for batch in _batches([d for d in small if d.size >= TINY])]
            run_all(jobs, workers())
        else:
            for member, stream in iter_data(contents):
                if _small(member):
                    self._small_blob(contents, member, _read_exactly(stream, member.size))
                else:
                    self._member(contents, member, cast(Member, stream), None)
        for folder, repo in contents.repos.items():  # hard links of `tar -h`: the bytes of their source
            for rel, source in repo.same_as.items():
                source_blob = (source.split("/", 1)[1] if source.startswith("blobs/")
                               else self.found.copies[(folder, source)])
                if rel.startswith("snapshots/"):
                    self.found.copies[(folder, rel)] = source_blob
                elif rel.split("/", 1)[1] != source_blob:
                    raise damaged(contents, f"{folder}/{rel} does not match its hash")

    def _small_batches(self, contents: ArchiveContents, batches: list[list[DataMember]]) -> None:
        for batch in batches:
            self._small_batch(contents, batch)

    def _small_batch(self, contents: ArchiveContents, batch: list[DataMember]) -> None:
        """Blobs lying near each other in an uncompressed archive: their span read in one piece."""
        start, end = batch[0].offset, batch[-1].offset + batch[-1].size
        try:
            buf = self.spare.get_nowait()
        except queue.Empty:
            buf = bytearray(self.PIECE)
        try:
            span, got = memoryview(buf)[:end - start], 0
            with open(contents.path, "rb", buffering=0) as fh:
                fh.seek(start)
                while got < len(span) and (n := fh.readinto(span[got:])):
                    got += n
            for m in batch:
                if m.offset + m.size - start > got:
                    raise CorruptArchiveError(f"archive ends inside {m.name}", "the archive is damaged")
                self._small_blob(contents, m, span[m.offset - start:m.offset - start + m.size])
        finally:
            self.spare.put(buf)

    def _small_blob(self, contents: ArchiveContents, m: DataMember, data: memoryview | bytes) -> None:
        """One small blob, its bytes in hand: hashed against its name, compared with the cache's
        copy (which then hashes right too), and staged unless the cache holds it intact."""
        blob = sys.intern(m.path[len("blobs/"):])  # the scan's string for it, not a copy
        h = blob_hasher(blob, m.size)
        h.update(data)
        if len(data) != m.size or h.hexdigest() != blob:
            raise damaged(contents, f"{m.name} does not match its hash")
        key = (m.folder, blob)
        if key in self.found.blobs:
            return  # seen in an earlier archive: hashed again, nothing more to write
        state = "new"
        if blob in self.held[m.folder]:
            try:
                with open(self.cache / m.folder / "blobs" / blob, "rb") as fh:
                    state = "present" if fh.read(m.size + 1) == data else "repair"
            except OSError:  # not a readable file (a folder, a dangling link): replaced
                state = "repair"
        if state != "present" and self.staging is not None:
            _write_new(self.found.stage_path(m.folder, blob), data)
        self.found.blobs[key], self.found.sizes[key] = state, m.size

    def _member_at(self, contents: ArchiveContents, m: DataMember) -> None:
        with open_member(contents, m) as stream:
            self._member(contents, m, stream, lambda: open_member(contents, m))

    def _member(self, contents: ArchiveContents, m: DataMember, stream: Member,
                reopen: Reopen | None) -> None:
        if m.path.startswith("blobs/"):
            self._blob(contents, m, stream, reopen)
        else:
            self._copy(contents, m, stream)

    def _blob(self, contents: ArchiveContents, m: DataMember, stream: Member, reopen: Reopen | None) -> None:
        """Hash one blob member against its name; stage it unless the cache holds it intact.

        A cached copy is hashed on its own thread when the member can be read again (then a damaged
        copy is repaired from a second read, hashed again); in a stream it is compared byte by byte.
        """
        blob = m.path.split("/", 1)[1]
        key = (m.folder, blob)
        cached = self.cache / m.folder / "blobs" / blob
        state, compare, cached_intact = "new", None, None
        if key in self.found.blobs:
            state = ""  # seen in an earlier archive: hash it again, write nothing
        elif blob not in self.held[m.folder]:
            pass
        elif cached.is_file() and cached.stat().st_size == m.size:
            state = "present"
            if reopen is None:
                compare = open(cached, "rb")  # noqa: SIM115 - closed by _read
            else:
                cached_intact = in_background(lambda: blob_matches(cached, blob))  # its size agreed
        elif os.path.lexists(cached):
            state = "repair"
        out = self._stage_file(m.folder, blob) if state in ("new", "repair") and self.staging else None
        try:
            same = self._read(contents, m, blob, stream, out, compare)
        except BaseException:
            if cached_intact is not None:  # no thread outlives the restore
                with contextlib.suppress(Exception):
                    cached_intact()
            raise
        if cached_intact is not None and not cached_intact():
            same = False
            if self.staging is not None and reopen is not None:
                with reopen() as again:
                    self._read(contents, m, blob, again, self._stage_file(m.folder, blob), None)
        if state == "present" and not same:
            state = "repair"
        if state:
            self.found.blobs[key], self.found.sizes[key] = state, m.size

    def _read(self, contents: ArchiveContents, m: DataMember, blob: str, stream: Member,
              out: io.BufferedWriter | None, compare: io.BufferedReader | None) -> bool:
        """Hash `stream` against `blob`, writing it to `out` behind the reads; with `compare`, say
        whether those bytes equal it (and the moment they differ, `out` becomes a repair copy
        starting with the part that agreed). Raises `damaged` when the bytes do not hash right."""
        writer, h, same, got = WriteBehind(self.PIECE, self.spare), blob_hasher(blob, m.size), True, 0
        try:
            while True:
                buf = writer.buffer()
                try:
                    n = stream.readinto(buf)
                    chunk = memoryview(buf)[:n]
                    h.update(chunk)
                    if compare is not None and same and compare.read(n) != chunk:
                        same = False
                        if self.staging is not None:  # bytes so far agreed: the repair copy starts with them
                            out = self._stage_file(m.folder, blob)
                            compare.seek(0)
                            out.write(compare.read(got))
                except BaseException:
                    writer.release(buf)
                    raise
                if not n:
                    writer.release(buf)
                    break
                if out is not None:
                    writer.write(out, buf, n)
                else:
                    writer.release(buf)
                got += n
        finally:
            try:
                writer.wait()
            finally:
                writer.close()
                for fh in (compare, out):
                    if fh is not None:
                        fh.close()
        if got != m.size or h.hexdigest() != blob:
            raise damaged(contents, f"{m.name} does not match its hash")
        return same

    def _stage_file(self, folder: str, blob: str) -> io.BufferedWriter:
        assert self.staging is not None  # its folder for `folder` was made by `archive`
        return open(self.found.stage_path(folder, blob), "wb")

    def _copy(self, contents: ArchiveContents, m: DataMember, stream: Member) -> None:
        """A plain snapshot file (tar -h): its blob is whichever name its bytes hash to."""
        sha256, sha1 = blob_hasher("0" * 64, m.size), blob_hasher("0" * 40, m.size)
        tmp = self._stage_file(m.folder, f"copy-{os.urandom(8).hex()}") if self.staging else None
        got, buf = 0, bytearray(self.PIECE)
        try:
            while n := stream.readinto(buf):
                chunk = memoryview(buf)[:n]
                sha256.update(chunk)
                sha1.update(chunk)
                if tmp is not None:
                    tmp.write(chunk)
                got += n
        finally:
            if tmp is not None:
                tmp.close()
        if got != m.size:
            raise damaged(contents, f"{m.name} is cut short")
        repo = contents.repos[m.folder]
        names = (sha1.hexdigest(), sha256.hexdigest())
        blob = next((b for b in names if b in repo.blobs or (self.cache / m.folder / "blobs" / b).is_file()),
                    names[1])
        self.found.copies[(m.folder, m.path)] = blob
        key = (m.folder, blob)
        carried = blob in repo.blobs and f"blobs/{blob}" not in repo.same_as  # its own member brings it
        if carried or key in self.found.blobs:
            if tmp is not None:
                Path(tmp.name).unlink()
            return
        cached = self.cache / m.folder / "blobs" / blob
        same = cached.is_file() and (tmp is None or filecmp.cmp(tmp.name, cached, shallow=False))
        self.found.blobs[key] = "present" if same else ("repair" if os.path.lexists(cached) else "new")
        self.found.sizes[key] = m.size
        if tmp is not None:
            if same:
                Path(tmp.name).unlink()
            else:
                self.found.staged[key] = tmp.name


def _write_new(path: str, data: memoryview | bytes) -> None:
    """`data` into a new file at `path` (created as `open(path, "wb")` would, without its buffer,
    terminal check and seeks: three system calls)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _small(d: DataMember) -> bool:
    return d.size <= SMALL and d.path.startswith("blobs/")


def _batches(small: list[DataMember]) -> list[list[DataMember]]:
    """Members in archive order, cut into runs whose bytes (with the headers between) span at most
    `SPAN`: each run is one read."""
    batches: list[list[DataMember]] = []
    for d in small:
        if batches and d.offset + d.size - batches[-1][0].offset <= SPAN:
            batches[-1].append(d)
        else:
            batches.append([d])
    return batches


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    """`size` bytes of a member's stream (fewer only where it ends early: the hash check says so)."""
    parts, got = [], 0
    while got < size and (piece := stream.read(size - got)):
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)
