"""Pack one cached repo revision into a tar: blobs as real bytes, snapshot entries as links.

The archive holds ``models--ORG--NAME/`` with blobs as regular files (real bytes, also for hub
2.x shared-blob-store links), snapshot entries as relative symlinks, the refs that point at the
commit, the trees listing and ``.no_exist`` markers. Every member has a fixed mtime, so the same
revision always packs to the same bytes (a pull can resume against a re-packed archive).

Standard library only: `provision fetch` ships this module to the remote host.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

with contextlib.suppress(ImportError):  # shipped: layout.py's source ran just before, in this namespace
    from .layout import FileRecord, snapshot_link

PACK_MTIME = 1_735_689_600  # fixed (2025-01-01): a revision packs to the same bytes, so pulls resume


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def pack_repo(cache: Path, folder: str, commit: str, out: BinaryIO,
              compress: Callable[[BinaryIO], BinaryIO] | None = None,
              entries: dict[str, str] | None = None,
              with_tree: bool = True) -> tuple[str, int, list[FileRecord], list[str]]:
    """Write one revision of ``cache/folder`` as a tar into `out`, through `compress` if given.

    `entries` maps snapshot paths to blob names (from the integrity check; needed for caches that
    hold copies instead of links); by default the snapshot's links are read. `with_tree=False`
    leaves out the ``trees/<commit>.json`` listing (a filtered download holds only part of what it
    lists). Returns (archive
    sha256, archive size, files, ref names). One function on purpose: the member order (folders,
    blobs, links, listing, refs) is the archive's format, and reads best in one place.
    """
    repo = cache / folder
    snap = repo / "snapshots" / commit
    hasher = HashingWriter(out)
    stream = compress(hasher) if compress else hasher  # type: ignore[arg-type]
    refs = _refs_to(repo, commit)

    def info(name: str, kind: bytes, size: int = 0, link: str = "") -> tarfile.TarInfo:
        ti = tarfile.TarInfo(f"{folder}/{name}" if name else folder)
        ti.type, ti.size, ti.linkname, ti.mtime = kind, size, link, PACK_MTIME
        ti.mode = 0o755 if kind in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644
        return ti

    files: list[FileRecord] = []
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for d in ("", "blobs", "refs", "snapshots", f"snapshots/{commit}"):
            tar.addfile(info(d, tarfile.DIRTYPE))
        links: list[tuple[str, str]] = []
        for entry in sorted(snap.rglob("*")):
            rel = entry.relative_to(snap).as_posix()
            if entry.is_dir() and not entry.is_symlink():
                tar.addfile(info(f"snapshots/{commit}/{rel}", tarfile.DIRTYPE))
                continue
            links.append((rel, entries[rel] if entries is not None
                          else posixpath.basename(os.readlink(entry))))
        seen: set[str] = set()
        for rel, blob in links:
            src = (repo / "blobs" / blob).resolve()  # through any shared-blob-store link
            size = src.stat().st_size
            files.append(FileRecord(rel, blob, size))
            if blob not in seen:
                seen.add(blob)
                with open(src, "rb") as fh:
                    tar.addfile(info(f"blobs/{blob}", tarfile.REGTYPE, size), fh)
        for rel, blob in links:
            tar.addfile(info(f"snapshots/{commit}/{rel}", tarfile.SYMTYPE, link=snapshot_link(rel, blob)))
        tree = repo / "trees" / f"{commit}.json"
        if with_tree and tree.is_file():
            data = tree.read_bytes()
            tar.addfile(info("trees", tarfile.DIRTYPE))
            tar.addfile(info(f"trees/{commit}.json", tarfile.REGTYPE, len(data)), io.BytesIO(data))
        for ref in refs:
            parts = ref.split("/")
            for i in range(1, len(parts)):
                tar.addfile(info("refs/" + "/".join(parts[:i]), tarfile.DIRTYPE))
            tar.addfile(info(f"refs/{ref}", tarfile.REGTYPE, 40), io.BytesIO(commit.encode()))
    if stream is not hasher:
        stream.close()
    return hasher.sha256.hexdigest(), hasher.size, files, refs


def _refs_to(repo: Path, commit: str) -> list[str]:
    """The names of the refs of `repo` that point at `commit`."""
    refs_dir = repo / "refs"
    if not refs_dir.is_dir():
        return []
    return sorted(p.relative_to(refs_dir).as_posix() for p in refs_dir.rglob("*")
                  if p.is_file() and p.read_text(errors="replace").strip() == commit)
