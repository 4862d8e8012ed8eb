"""Pack one cached repo revision into a tar: blobs as real bytes, snapshot entries as links.

The archive holds ``models--ORG--NAME/`` with blobs as regular files (real bytes, also for hub
2.x shared-blob-store links), snapshot entries as relative symlinks, the refs that point at the
commit and the trees listing (not ``.no_exist`` markers). Every member has a fixed mtime, so the same
revision always packs to the same bytes (a pull can resume against a re-packed archive).

The very same code packs on both ends: `provision backup` here, the agent on the fetch host.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from .layout import FileRecord, snapshot_link

PACK_MTIME = 1_735_689_600  # fixed (2025-01-01): a revision packs to the same bytes, so pulls resume
COPY_BUF = 4 * 1024 * 1024  # tarfile copies blob bytes in pieces this big (its default is 16 KiB)


class Writer(Protocol):
    """Where an archive goes: a file, or a sink that sends it on (the agent's live stream)."""

    def write(self, data: bytes, /) -> object: ...


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: Writer) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:  # tarfile's "w:" mode asks where it is
        return self.size

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


class BlobReader(Protocol):
    """What `pack_repo` reads a blob from (`open_blob`): tarfile reads pieces and writes each to the
    archive (a file, or a reader that hashes or waits for a download on the way), then closes it.
    A piece may be a memoryview (backup's reader reuses its buffers): tarfile only takes its length
    and writes it on."""

    def read(self, size: int = -1, /) -> bytes | memoryview: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PackResult:
    """One revision packed: the archive's sha256 and size, its files, the refs that name its commit."""

    sha256: str
    size: int
    files: list[FileRecord]
    refs: list[str]


@dataclass
class PackPlan:
    """What a revision's archive holds, in the archive's order: the snapshot's sub-folders and
    its files (path, blob, size). From the snapshot on disk, or from the Hub's listing before the
    download (so the archive can be sent while the bytes still arrive)."""

    folders: list[str]
    files: list[FileRecord]

    @classmethod
    def from_files(cls, files: list[FileRecord]) -> PackPlan:
        """The plan a snapshot of exactly these files gives (the same order as `from_snapshot`)."""
        folders = {"/".join(f.path.split("/")[:i]) for f in files for i in range(1, f.path.count("/") + 1)}
        order = sorted([(tuple(d.split("/")), d, None) for d in folders]
                       + [(tuple(f.path.split("/")), f.path, f) for f in files], key=lambda t: t[0])
        return cls([d for _, d, f in order if f is None], [f for _, _, f in order if f is not None])

    @classmethod
    def from_snapshot(cls, repo: Path, commit: str, entries: dict[str, str] | None = None) -> PackPlan:
        """The snapshot's folders and links; `entries` (snapshot path -> blob, from an integrity
        check) for caches that hold copies instead of links."""
        snap = repo / "snapshots" / commit
        files = []
        for entry in snap.rglob("*"):
            if entry.is_dir() and not entry.is_symlink():
                continue
            rel = entry.relative_to(snap).as_posix()
            blob = entries[rel] if entries is not None else posixpath.basename(os.readlink(entry))
            files.append(FileRecord(rel, blob, (repo / "blobs" / blob).resolve().stat().st_size))
        return cls.from_files(files)


def pack_repo(cache: Path, folder: str, commit: str, out: Writer,
              compress: Callable[[io.RawIOBase], BinaryIO] | None = None,
              entries: dict[str, str] | None = None,
              with_tree: bool = True, plan: PackPlan | None = None,
              open_blob: Callable[[FileRecord], BlobReader] | None = None,
              before_links: Callable[[], None] | None = None) -> PackResult:
    """Write one revision of ``cache/folder`` as a tar into `out`, through `compress` if given.

    `plan` defaults to the snapshot on disk (see `PackPlan`); `open_blob` to the blob's file
    (through any shared-blob-store link); `before_links` runs once every blob is written (a
    streamed pack waits there for the download to finish). `with_tree=False` leaves out the
    ``trees/<commit>.json`` listing (a filtered download holds only part of what it lists).
    One function on purpose: the member
    order (folders, blobs, links, listing, refs) is the archive's format, and reads best in one place.
    """
    repo = cache / folder
    plan = plan or PackPlan.from_snapshot(repo, commit, entries)
    hasher = HashingWriter(out)
    stream = compress(hasher) if compress else hasher

    def info(name: str, kind: bytes, size: int = 0, link: str = "") -> tarfile.TarInfo:
        ti = tarfile.TarInfo(f"{folder}/{name}" if name else folder)
        ti.type, ti.size, ti.linkname, ti.mtime = kind, size, link, PACK_MTIME
        ti.mode = 0o755 if kind in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644
        return ti

    def default_open(f: FileRecord) -> BlobReader:
        return open((repo / "blobs" / f.blob).resolve(), "rb")

    # what tarfile.open(mode="w:") makes, with a bigger copy buffer (the `copybufsize` TarFile takes)
    with tarfile.TarFile(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUF) as tar:
        for d in ("", "blobs", "refs", "snapshots", f"snapshots/{commit}"):
            tar.addfile(info(d, tarfile.DIRTYPE))
        for d in plan.folders:
            tar.addfile(info(f"snapshots/{commit}/{d}", tarfile.DIRTYPE))
        seen: set[str] = set()
        for f in plan.files:
            if f.blob not in seen:
                seen.add(f.blob)
                fh = (open_blob or default_open)(f)
                try:
                    # typeshed: SupportsRead[bytes]; tarfile.copyfileobj takes len() of a piece and writes it
                    tar.addfile(info(f"blobs/{f.blob}", tarfile.REGTYPE, f.size), fh)  # type: ignore[arg-type]
                finally:
                    fh.close()
        if before_links:
            before_links()
        for f in plan.files:
            tar.addfile(info(f"snapshots/{commit}/{f.path}", tarfile.SYMTYPE,
                             link=snapshot_link(f.path, f.blob)))
        tree = repo / "trees" / f"{commit}.json"
        if with_tree and tree.is_file():
            data = tree.read_bytes()
            tar.addfile(info("trees", tarfile.DIRTYPE))
            tar.addfile(info(f"trees/{commit}.json", tarfile.REGTYPE, len(data)), io.BytesIO(data))
        refs = _refs_to(repo, commit)
        for ref in refs:
            parts = ref.split("/")
            for i in range(1, len(parts)):
                tar.addfile(info("refs/" + "/".join(parts[:i]), tarfile.DIRTYPE))
            tar.addfile(info(f"refs/{ref}", tarfile.REGTYPE, 40), io.BytesIO(commit.encode()))
    if stream is not hasher:
        stream.close()
    return PackResult(hasher.sha256.hexdigest(), hasher.size, list(plan.files), refs)


def _refs_to(repo: Path, commit: str) -> list[str]:
    """The names of the refs of `repo` that point at `commit`."""
    refs_dir = repo / "refs"
    if not refs_dir.is_dir():
        return []
    return sorted(p.relative_to(refs_dir).as_posix() for p in refs_dir.rglob("*")
                  if p.is_file() and p.read_text(errors="replace").strip() == commit)
