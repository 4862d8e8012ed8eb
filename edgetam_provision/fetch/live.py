"""Packing while huggingface_hub downloads: each blob read from its growing ``*.incomplete`` file,
hashed against its name, and sent as it is packed. Shipped to the host (standard library only).

The archive's layout comes from the Hub's listing (`PackPlan.from_files`), so the bytes are the very
archive a pack after the download writes; anything that does not match the listing (`NotAsListed`)
voids the stream, and the revision is packed again after the download.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

with contextlib.suppress(ImportError):  # shipped: layout and pack ran just before, in this namespace
    from ..archive.pack import PackPlan, pack_repo
    from ..hub.layout import FileRecord, blob_hasher


class NotAsListed(Exception):
    """The download did not produce what the Hub's listing said: the streamed archive is void."""


class Arriving(io.RawIOBase):
    """One blob read while huggingface_hub downloads it: from its ``*.incomplete`` file as that
    grows, then from the finished blob. Blocks until the bytes are there (tarfile wants full reads).
    The bytes read are hashed against the blob's name: whatever the download did meanwhile (a
    restart, a writer that is not sequential), what was sent is the blob, or the stream is void.

    `failed()` says whether the download ended without this blob (its error, or None while it
    runs); `waiting()` runs before each pause (the packer sends what it holds meanwhile).
    """

    POLL_S = 0.02

    def __init__(self, blobs: Path, record: FileRecord, failed: Callable[[], BaseException | None],
                 waiting: Callable[[], None]) -> None:
        self.blobs, self.record, self.failed, self.waiting = blobs, record, failed, waiting
        self.fh: BinaryIO | None = None
        self.pos, self.finished = 0, False
        self.hash = blob_hasher(record.blob, record.size)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        want = self.record.size - self.pos if n < 0 else min(n, self.record.size - self.pos)
        parts = []
        while want:
            data = self.fh.read(want) if self.fh else b""
            if data:
                parts.append(data)
                want -= len(data)
                self.pos += len(data)
                self.hash.update(data)
            else:
                self._wait()
        if self.pos == self.record.size and self.hash.hexdigest() != self.record.blob:
            raise NotAsListed(f"{self.record.path}: the bytes read while downloading do not hash to "
                              f"{self.record.blob[:12]}")
        return b"".join(parts)

    def _wait(self) -> None:
        final = self.blobs / self.record.blob
        if final.is_file():  # finished: read on from the blob itself (a restarted download is a new file)
            if self.fh is not None and os.fstat(self.fh.fileno()).st_ino == final.stat().st_ino:
                if self.finished:  # read to its end once more after the rename: truly short
                    raise NotAsListed(f"{self.record.path} is smaller than the Hub said")
                self.finished = True  # its last bytes may have landed just before the rename
                return
            self._switch(open(final, "rb"))  # noqa: SIM115 - closed in close()
            return
        if self.fh is None:
            growing = sorted(self.blobs.glob(self.record.blob + "*.incomplete"), key=_mtime)
            if growing:
                with contextlib.suppress(OSError):
                    self._switch(open(growing[-1], "rb"))  # noqa: SIM115 - closed in close()
                    return
        error = self.failed()
        if error is not None:
            raise error
        self.waiting()
        time.sleep(self.POLL_S)

    def _switch(self, fh: BinaryIO) -> None:
        if self.fh is not None:
            self.fh.close()
        fh.seek(self.pos)
        self.fh = fh

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
        super().close()


def _mtime(path: Path) -> float:
    """When a download file last grew; 0 for one renamed or removed meanwhile."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


BIG_MEMBER = 0o77777777777 + 1  # from 8 GiB a member's size no longer fits its ustar header: a pax record
LISTING_PER_FILE = 512  # huggingface_hub's trees/<commit>.json spends at most this per file, beyond its path


def stream_bound(folder: str, commit: str, plan: PackPlan, ref: str | None) -> int:
    """The most bytes the streamed archive of `plan` can have: announced before its first byte.

    Its headers are those of the very pack (`pack_repo` writes them, with every blob empty, and the
    ref the download writes); the blobs add their sizes in 512-byte blocks (and a pax record from
    8 GiB); the trees listing huggingface_hub may write is bounded by its files' paths. A pack that
    would outgrow it voids the stream instead (`LiveSink`), so an honest host never breaks it."""
    empty = PackPlan(plan.folders, [dataclasses.replace(f, size=0) for f in plan.files])
    with tempfile.TemporaryDirectory(prefix="provision-bound-") as tmp:
        if ref is not None:
            (Path(tmp) / folder / "refs" / ref).parent.mkdir(parents=True)
            (Path(tmp) / folder / "refs" / ref).write_text(commit)
        headers = pack_repo(Path(tmp), folder, commit, io.BytesIO(), plan=empty,
                            open_blob=lambda f: io.BytesIO())[1]
    blobs = {f.blob: f.size for f in plan.files}
    data = sum(-(-size // 512) * 512 + (1024 if size >= BIG_MEMBER else 0) for size in blobs.values())
    listing = 1024 + sum(LISTING_PER_FILE + 6 * len(f.path.encode()) for f in plan.files)
    return headers + data + 3 * 512 + -(-listing // 512) * 512 + tarfile.RECORDSIZE


class LiveSink(io.RawIOBase):
    """Where a streamed pack writes: in chunks to `send` as the archive grows, never past `bound`
    (the size announced to the client: a pack that would outgrow it is void, `NotAsListed`)."""

    SMALL = 1024 * 1024  # headers and small blobs gather up to this; big pieces go out at once

    def __init__(self, send: Callable[[bytes], None], bound: int) -> None:
        self.send, self.held, self.bound, self.written = send, bytearray(), bound, 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.written += len(data)
        if self.written > self.bound:
            raise NotAsListed(f"the archive grew past the {self.bound} bytes announced")
        if len(self.held) + len(data) < self.SMALL:
            self.held += data
        else:
            self.flush_held()
            self.send(bytes(data))
        return len(data)

    def flush_held(self) -> None:
        if self.held:
            self.send(bytes(self.held))
            self.held.clear()


class Background(threading.Thread):
    """A download running beside the packer: `failed()` is its error once it ended without success."""

    def __init__(self, work: Any) -> None:
        super().__init__(daemon=True)
        self.work, self.error = work, None  # type: Any, BaseException | None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # handed to the packing thread
            self.error = exc

    def failed(self) -> BaseException | None:
        if self.is_alive():
            return None
        return self.error or NotAsListed("the download ended without every listed file")


def pack_streaming(cache: Path, folder: str, commit: str, plan: PackPlan, fetch: Background,
                   chan: Any, bound: int) -> tuple[str, int, list[FileRecord], list[str]] | None:
    """Pack while `fetch` downloads, sending each piece on `chan` (the agent's) as it is written, at
    most `bound` bytes (`stream_bound`, announced); no file is written (the client has it once it
    checks, else the agent packs it). None: void."""
    repo = cache / folder

    def before_links() -> None:
        fetch.join()
        if fetch.error is not None:
            raise fetch.error
        if PackPlan.from_snapshot(repo, commit) != plan:
            raise NotAsListed("the snapshot differs from the Hub's listing")

    sink = LiveSink(chan.emit_data, bound)
    try:
        packed = pack_repo(cache, folder, commit, sink, plan=plan, before_links=before_links,
                           open_blob=lambda f: Arriving(repo / "blobs", f, fetch.failed, sink.flush_held))
        sink.flush_held()
    except NotAsListed as exc:
        chan.emit({"event": "stream-void", "why": str(exc)[:500]})
        fetch.join()
        return None
    return packed
