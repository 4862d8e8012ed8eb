"""`provision backup`: pack cached repo revisions into verified archives plus a manifest.

One read of each blob serves both checks: pack reads it into the archive (whose sha256 it takes)
while a second thread hashes the same bytes against the blob's name. Archives are written to temp
files and put in place only when every revision packed clean, so a damaged blob leaves the output
folder as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import __version__
from .archive.compression import SUFFIX, compressor
from .errors import IntegrityError
from .fsutil import disk_error, settle_mode, tmp_sibling
from .hub.cache import RevisionState, check_revision, resolve_commit
from .hub.layout import FileRecord, archive_name, repo_folder_name
from .hub.manifest import ArchiveEntry, read_manifest, record
from .integrity.hashing import blob_hasher
from .remote.pack import pack_repo
from .repos import DEFAULT_REPOS, RepoSpec


@dataclass(frozen=True)
class BackupResult:
    archive: Path
    entry: ArchiveEntry
    reused: bool

    @property
    def status(self) -> str:
        return "already backed up" if self.reused else "written"

    def to_dict(self) -> dict[str, object]:
        return {"archive": str(self.archive), "repo_id": self.entry.repo_id,
                "commit": self.entry.commit, "size": self.entry.size,
                "sha256": self.entry.sha256, "files": len(self.entry.files),
                "status": self.status}


@dataclass(frozen=True)
class BackupReport:
    """`provision backup`: the folder written into, and each revision's archive in it."""

    out: Path
    backups: tuple[BackupResult, ...]

    def to_dict(self) -> dict[str, object]:
        return {"out": str(self.out), "backups": [r.to_dict() for r in self.backups]}


class CheckedBlob(io.RawIOBase):
    """A blob's bytes as pack reads them, hashed against the blob's name on a thread of its own
    (hashlib lets go of the GIL, so this and the archive's sha256 run side by side). Closing it
    raises `bad(record)` unless exactly the record's bytes were read and they hash to its name.

    Reads land in a ring of reused buffers (no fresh memory per piece): the queue holds at most
    `QUEUED` pieces, so a buffer comes round again only once the hasher is done with it."""

    QUEUED = 4

    def __init__(self, path: Path, record: FileRecord, bad: Callable[[FileRecord], Exception]) -> None:
        self.fh, self.record, self.bad = open(path, "rb", buffering=0), record, bad  # noqa: SIM115
        self.hash, self.got = blob_hasher(record.blob, record.size), 0
        self.ring: list[bytearray] = []
        self.turn = 0
        self.pieces: queue.Queue[memoryview | None] = queue.Queue(maxsize=self.QUEUED)
        self.thread = threading.Thread(target=self._hash, daemon=True)
        self.thread.start()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> memoryview:
        n = self.record.size - self.got if n < 0 else n
        if len(self.ring) < self.QUEUED + 2:  # queued, being hashed, being written by tar
            self.ring.append(bytearray(n))
        buf = self.ring[self.turn % len(self.ring)]
        self.turn += 1
        if len(buf) < n:
            buf.extend(bytes(n - len(buf)))
        view, got = memoryview(buf)[:n], 0
        while got < n and (k := self.fh.readinto(view[got:])):
            got += k
        self.got += got
        self.pieces.put(view[:got])
        return view[:got]

    def _hash(self) -> None:
        while (piece := self.pieces.get()) is not None:
            self.hash.update(piece)

    def close(self) -> None:
        if self.closed:
            return
        self.pieces.put(None)
        self.thread.join()
        self.fh.close()
        super().close()
        if self.got != self.record.size or self.hash.hexdigest() != self.record.blob:
            raise self.bad(self.record)


def backup(cache: Path, specs: list[RepoSpec] | None, out: Path,
           compression: str = "none") -> list[BackupResult]:
    """Back up each spec's revision (default: the EdgeTAM repos) into `out`.

    Every revision is checked (links, sizes, listing) before anything is packed, and every blob is
    hashed while it is packed; a failing revision stops the run with nothing written. Archives
    already recorded with the same commit are kept, not rewritten.
    """
    specs = specs or [RepoSpec(r) for r in DEFAULT_REPOS]
    states = []
    for spec in specs:
        commit = resolve_commit(cache, spec.repo_id, spec.revision, spec.repo_type)
        state = check_revision(cache, spec.repo_id, commit, hash_blobs=False, repo_type=spec.repo_type)
        if not state.ok:
            raise _damaged(state, state.problems[0])
        states.append(state)
    out.mkdir(parents=True, exist_ok=True)
    known = read_manifest(out)
    results: list[BackupResult] = []
    packed: list[tuple[Path, Path]] = []  # (temp file, final path), put in place once all packed clean
    try:
        for state in states:
            name = archive_name(state.repo_id, state.commit, SUFFIX[compression], state.repo_type)
            path = out / name
            prior = known.get(name)
            if prior and prior.commit == state.commit and path.is_file() \
                    and path.stat().st_size == prior.size:
                results.append(BackupResult(path, prior, True))
                continue
            tmp = tmp_sibling(path)
            packed.append((tmp, path))
            with open(tmp, "xb") as fh:
                entry = _pack(cache, state, name, fh, compression)
            results.append(BackupResult(path, entry, False))
        for tmp, path in packed:
            settle_mode(tmp, path)
            os.replace(tmp, path)
        packed.clear()
        record(out, [r.entry for r in results])
    except OSError as exc:
        raise disk_error(exc, out, "output folder") from None
    finally:
        for tmp, _path in packed:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return results


def _pack(cache: Path, state: RevisionState, name: str, fh: BinaryIO, compression: str) -> ArchiveEntry:
    repo = cache / repo_folder_name(state.repo_id, state.repo_type)

    def bad(f: FileRecord) -> IntegrityError:
        return _damaged(state, f"{f.path}: blob {f.blob} does not match its hash")

    packed = pack_repo(cache, repo.name, state.commit, fh, compressor(compression),
                       {f.path: f.blob for f in state.files},
                       open_blob=lambda f: CheckedBlob((repo / "blobs" / f.blob).resolve(), f, bad))
    return ArchiveEntry(archive=name, repo_id=state.repo_id, repo_type=state.repo_type, commit=state.commit,
                        refs=tuple(packed.refs), files=tuple(packed.files), sha256=packed.sha256,
                        size=packed.size, compression=compression,
                        tool_version=__version__,
                        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def _damaged(state: RevisionState, problem: str) -> IntegrityError:
    return IntegrityError(f"{state.repo_id}@{state.commit[:12]} failed its integrity check: {problem}",
                          "re-download it (`provision fetch`) instead of backing up bad bytes")
