"""Threads for byte work: hashlib and file reads and writes let go of the GIL, so hashing on
several threads uses several cores; `WriteBehind` writes while the next piece is hashed. Plain
`threading` (concurrent.futures costs a restore ~5 ms of imports, logging among them)."""

from __future__ import annotations

import io
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
MAX_WORKERS = 8  # beyond this a restore is bound by the disk, not by sha256


def workers() -> int:
    """How many threads hash at once here: the cores this process may use, at most `MAX_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity call
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def in_background(work: Callable[[], T]) -> Callable[[], T]:
    """Start `work` on a thread now; the returned call waits for it and gives its result (or raises
    its error)."""
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # handed to whoever waits
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        if failed:
            raise failed[0]
        return done[0]

    return result


def run_all(jobs: Sequence[Callable[[], None]], threads: int) -> None:
    """Run `jobs` on up to `threads` threads, in order of the list; once one fails no further job
    starts, and the first error is raised after every running job has ended."""
    todo = list(reversed(jobs))
    errors: list[BaseException] = []
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if errors or not todo:
                    return
                job = todo.pop()
            try:
                job()
            except BaseException as exc:  # the first one is raised by the caller
                with lock:
                    errors.append(exc)

    pool = [threading.Thread(target=loop, daemon=True) for _ in range(max(1, min(threads, len(jobs))))]
    for t in pool:
        t.start()
    try:
        for t in pool:
            t.join()
    except BaseException as exc:  # Ctrl-C while waiting: start nothing more, let the running jobs end
        with lock:
            errors.append(exc)
        for t in pool:
            t.join()
    if errors:
        raise errors[0]


class WriteBehind:
    """Writes staged bytes in a second thread while the next piece is read and hashed (both let go
    of the GIL): a big restore costs about the larger of hashing and writing, not their sum.
    Buffers come from, and go back to, `spare` (shared by the readers of one restore)."""

    DEPTH = 3  # buffers in flight

    def __init__(self, size: int, spare: queue.SimpleQueue[bytearray]) -> None:
        self.size, self.spare = size, spare
        self.free: queue.Queue[bytearray] = queue.Queue()
        self.todo: queue.Queue[tuple[io.BufferedWriter, bytearray, int] | None] = queue.Queue()
        self.made, self.error = 0, None  # type: int, OSError | None
        self.thread: threading.Thread | None = None

    def buffer(self) -> bytearray:
        if self.free.empty() and self.made < self.DEPTH:
            self.made += 1
            try:
                return self.spare.get_nowait()
            except queue.Empty:
                return bytearray(self.size)
        return self.free.get()

    def release(self, buf: bytearray) -> None:
        """Give back a buffer that is not to be written."""
        self.free.put(buf)

    def write(self, fh: io.BufferedWriter, buf: bytearray, n: int) -> None:
        """Queue `buf[:n]` for `fh`; the buffer comes back through `buffer()` once written."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        self.todo.put((fh, buf, n))

    def wait(self) -> None:
        """Every queued write done; the first write error, if any, raised here."""
        self.todo.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def close(self) -> None:
        """Stop the writing thread (after `wait`) and hand the buffers back to `spare`."""
        if self.thread is not None:
            self.todo.put(None)
            self.thread.join()
            self.thread = None
        while not self.free.empty():
            self.spare.put(self.free.get_nowait())

    def _run(self) -> None:
        while (job := self.todo.get()) is not None:
            fh, buf, n = job
            try:
                if self.error is None:
                    fh.write(memoryview(buf)[:n])
            except OSError as exc:
                self.error = exc
            finally:
                self.free.put(buf)
                self.todo.task_done()
