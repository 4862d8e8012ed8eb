"""How long a host may take: the one rule every byte from it runs under, whatever it keeps alive.

Two clocks. Silence: every read waits at most ``timeout`` seconds for a byte (`protocol.Stream`,
and the OpenSSH pull). Progress: in every stretch of ``window`` seconds (``--stall``) the host must
move at least `PROGRESS_STEP` bytes — of its download (as its ``download`` events say, never
past the total it declared first) or of archive bytes that reach us (streamed, pulled over the
channel or over OpenSSH); a stretch that moved less is a stall, however lively the host is
otherwise (progress lines, one byte every second).

Why a floor over a window rather than a deadline from the declared size: a deadline must assume a
speed for the whole transfer, so it either cuts off a real slow link on a big file or is too loose
to matter, and a download's total is not always declared; a floor asks only for the slowest speed
that is still a download (1 MiB per 600 s by default, about 1.7 KB/s: a bad hotel link moves
that in well under a second) and is judged where the user is. A host that keeps exactly the floor
is, by this rule, a slow download: the worst case is its declared bytes at that floor (the
download, then the transfer) plus one window, stated in docs/fetch.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..console import human_size
from ..errors import RemoteConnectError

PROGRESS_STEP = 1024 * 1024  # bytes a host must move in every --stall window
CLOCK: Callable[[], float] = time.monotonic  # read when a Pace is made: tests put a faster one here


class Pace:
    """The progress clock of one fetch: `moved` counts bytes, `check` raises once a whole window
    passed with less than `step` of them. Thread-safe enough for counters fed under one lock."""

    def __init__(self, where: str, window: float, step: int = PROGRESS_STEP,
                 clock: Callable[[], float] | None = None) -> None:
        self.where, self.window, self.step = where, window, step
        self.clock = clock or CLOCK
        self.total = 0
        self.restart()

    def restart(self) -> None:
        """A new stretch starts now (a phase of the host ended, or our own work took the time)."""
        self.mark_at, self.mark = self.clock(), self.total

    def moved(self, n: int) -> None:
        self.total += n
        if self.total - self.mark >= self.step:
            self.restart()

    def check(self) -> None:
        if self.clock() - self.mark_at <= self.window:
            return
        moved = self.total - self.mark
        if not moved:
            raise RemoteConnectError(f"the fetch from {self.where} made no progress for {self.window:.0f} s",
                                     "run again (the host keeps what it has), or raise the stall window")
        raise RemoteConnectError(f"{self.where} moved only {human_size(moved)} in {self.window:.0f} s, less "
                                 f"than the {human_size(self.step)} every stretch that long must move",
                                 "run again (the host keeps what it has, pulls resume); on a link this slow, "
                                 "raise the stall window")


class Declared:
    """The host's download progress, credited to `Pace` only for repos that were asked, where it
    advances past its first report, and up to the first total the host declared for each."""

    def __init__(self, pace: Pace, repos: set[str]) -> None:
        self.pace, self.repos = pace, repos
        self.seen: dict[str, int] = {}
        self.total: dict[str, int] = {}

    def report(self, repo: str, done: int, total: int | None) -> None:
        if repo not in self.repos:
            return  # not progress (the client refuses such a report)
        if total is not None:
            self.total.setdefault(repo, total)
        done = min(done, self.total.get(repo, done))
        before = self.seen.setdefault(repo, done)  # the first report: what the host had (a resumed run)
        if done > before:
            self.seen[repo] = done
            self.pace.moved(done - before)
