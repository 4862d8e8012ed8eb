"""Receiving archive bytes from a `Source` (the agent's channel; OpenSSH has its own ranged pull):
hashed while received into ``NAME.part``, resumable, renamed into place only when its sha256 checks.
"""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from ..fsutil import CHUNK, disk_error


class ProgressBar:
    """A byte progress bar on stderr (tqdm's, the one huggingface_hub shows too): bytes, rate, ETA.
    Nothing unless enabled (stderr is a terminal and the output is not --json). Closed, with its
    line ended, once `total` is reached or on `close()`."""

    def __init__(self, name: str, total: int, start: int, enabled: bool) -> None:
        self.done, self.total, self.bar = start, total, None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, initial=start, desc=name[:40], unit="B", unit_scale=True,
                            unit_divisor=1000, file=sys.stderr, mininterval=0.2, smoothing=0.05,
                            dynamic_ncols=True, leave=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if self.total and self.done >= self.total:
                self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _part_state(part: Path) -> tuple[int, Any]:
    h = hashlib.sha256()
    if not part.is_file():
        return 0, h
    with open(part, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return part.stat().st_size, h


Source = Callable[[int, str], tuple[int, Iterator[bytes]]]


def _drain(chunks: Iterator[bytes], fh: Any, h: Any, progress: ProgressBar) -> None:
    """Hash and write `chunks` in a worker thread while the next ones arrive (~6% faster here)."""
    q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            while (chunk := q.get()) is not None:
                h.update(chunk)
                fh.write(chunk)
        except BaseException as exc:  # handed to the receiving thread
            failure.append(exc)
            while q.get() is not None:  # keep draining so the receiver never blocks
                pass

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        for chunk in chunks:
            q.put(chunk)
            progress.update(len(chunk))
            if failure:
                break
    finally:
        q.put(None)
        worker.join()
    if failure:
        raise failure[0]


def pull(source: Source, event: dict[str, Any], out: Path, bar: bool) -> tuple[int, float]:
    """Pull one archive into ``out/NAME`` via ``NAME.part``; returns (resumed offset, seconds).

    Hashes while receiving; resumes from the part's size; on a sha256 mismatch discards the part
    and pulls once more from the start, then gives up with nothing kept.
    """
    name, size, want = event["archive"], int(event["size"]), event["sha256"]
    final, part = out / name, out / f"{name}.part"
    for attempt in (1, 2):
        offset, h = _part_state(part)
        if offset > size:
            part.unlink()
            offset, h = 0, hashlib.sha256()
        t0 = time.monotonic()
        start, chunks = source(offset, h.hexdigest())
        if start != offset:
            h = hashlib.sha256()
        progress = ProgressBar(name, size, start, bar)
        try:
            with open(part, "r+b" if start else "wb") as fh:
                fh.seek(start)
                fh.truncate()
                _drain(chunks, fh, h, progress)
        except OSError as exc:
            raise disk_error(exc, part) from None
        if h.hexdigest() == want:
            os.replace(part, final)
            return start, time.monotonic() - t0
        part.unlink()
        if attempt == 2:
            raise IntegrityError(f"{name}: received bytes do not match the host's sha256 {want[:16]}…",
                                 "the transfer was corrupted twice; nothing was kept — check the "
                                 "network or the host, then run again")
    raise AssertionError("unreachable")  # pragma: no cover



class LiveArchive:
    """An archive received while the host packs it (``chunk`` events): hashed and written into
    ``NAME.part`` as it arrives, at most `bound` bytes (the size the host announced; the client
    refuses a chunk past it), kept as ``NAME`` only if the host's final sha256 and size agree.
    (Here, not in a worker thread as `_drain` does: beside paramiko's own thread, on 2 cores, a
    third one measured slower.)"""

    def __init__(self, out: Path, name: str, bound: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.part, self.final, self.bound = out / f"{name}.part", out / name, bound
        self.h, self.size, self.t0 = hashlib.sha256(), 0, time.monotonic()
        try:
            self.fh = open(self.part, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise disk_error(exc, self.part) from None

    def add(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                self.h.update(chunk)
                self.fh.write(chunk)
                self.size += len(chunk)
        except OSError as exc:
            raise disk_error(exc, self.part) from None

    def close(self) -> None:
        """Stop writing; what arrived stays in the part (a prefix of the archive: a rerun resumes it)."""
        self.fh.close()

    def finish(self, size: int, sha256: str) -> float | None:
        """Seconds it took, if what arrived is the host's archive; else the part is dropped (None)."""
        self.close()
        if self.size == size and self.h.hexdigest() == sha256:
            os.replace(self.part, self.final)
            return time.monotonic() - self.t0
        self.part.unlink(missing_ok=True)
        return None

    def discard(self) -> None:
        self.close()
        self.part.unlink(missing_ok=True)
