"""Threads for byte work: hashlib and file reads and writes let go of the GIL, so hashing on
several threads uses several cores. Plain `threading` (concurrent.futures costs a restore ~5 ms of
imports, logging among them)."""

from __future__ import annotations

import os
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
