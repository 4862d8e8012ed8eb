"""The fast data path: OpenSSH's own client carries archive bytes, one or several streams at once.

paramiko's Python receive path tops out below OpenSSH's (benchmarks/results/pull.md, 1 GiB on
loopback: 282 MB/s, against 517 for scp and 644 for ``ssh cat``), so when an ``ssh`` binary is
installed it pulls the bytes: the same host, port, user, keys, ProxyCommand/ProxyJump and the same
known_hosts files paramiko checked
(``StrictHostKeyChecking=yes``, ``BatchMode=yes``), AES-GCM first. The agent and its control
messages stay on paramiko; only bytes travel here, and every byte is still hashed against the
host's sha256 before the archive is kept.

The archive is cut into N ranges (4 from 16 MiB, since each OpenSSH stream is capped at window /
RTT on a slow link; `--streams N` to choose), one ssh process each, each written into its place in
the part file; finished ranges are remembered beside it (``NAME.part.ranges``), so a cut pull
resumes with the ranges still missing, and the whole part is hashed at the end. The ranges run under
the fetch's deadlines: ``timeout`` seconds of silence, and its `Pace` (bytes every ``--stall``).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

from ..errors import IntegrityError, RemoteConnectError, UsageError
from ..integrity.receive import Part, Range
from .pace import Pace
from .pull import Announced, ProgressBar, PullResult
from .ssh import SSHTarget

SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]{1,1000}\Z")  # what the agent's work folder paths look like
CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
           "aes128-ctr,aes256-ctr")
MULTI_STREAM_FROM = 256 * 1024 * 1024  # auto: below this the agent's channel wins (an ssh start costs ~0.3 s)
SLOW_LINK_RTT_S = 0.005  # a round trip slower than this is a WAN: several streams pay off early
SLOW_LINK_FROM = 16 * 1024 * 1024
DEFAULT_STREAMS = 4
READ = 1024 * 1024
POLL_S = 0.5  # how often a waiting range looks at the deadlines (and whether another range failed)


def use_openssh(transfer: str, target: SSHTarget) -> bool:
    """Whether the bytes travel through the ``ssh`` binary: auto uses it when installed, except
    through ProxyJump hops (paramiko already walks them; OpenSSH re-resolves and may refuse a
    hop it sees as a loop)."""
    plain_paths = not any(any(c.isspace() for c in f) for f in target.known_hosts)
    have = shutil.which("ssh") is not None and plain_paths
    if transfer == "openssh" and not have:
        raise UsageError("the openssh transfer needs OpenSSH's ssh client on PATH",
                         "install openssh-client, or use the stream transfer")
    jump = bool(target.proxy_jump and target.proxy_jump.lower() != "none")
    return have and (transfer == "openssh" or (transfer == "auto" and not jump))


def child_env() -> dict[str, str]:
    """What an ssh child needs (keys, agent, locale), and nothing else: no token variables."""
    keep = ("PATH", "HOME", "USER", "LOGNAME", "SSH_AUTH_SOCK", "LANG", "LC_ALL", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


def worth_openssh(size: int, rtt: float) -> bool:
    """Auto's choice for one archive (measured, benchmarks/results/pull.md): on a LAN the paramiko
    channel wins below 256 MiB and four ssh streams from there; on a slow link (a round trip of
    the control channel over 5 ms) the window-bound single stream loses early, so from 16 MiB."""
    return size >= MULTI_STREAM_FROM or (rtt > SLOW_LINK_RTT_S and size >= SLOW_LINK_FROM)


def channel_part(out: Path, name: str) -> bool:
    """Whether `out` keeps a cut pull of `name` from the agent's channel (a part without a ledger):
    auto resumes it there, where the agent confirms the prefix, rather than drop it for ranges."""
    return Part(out, name, 0, "").in_order()


def ssh_argv(target: SSHTarget, timeout: float) -> list[str]:
    """ssh with exactly the connection paramiko made: same keys, same known_hosts, no prompts."""
    argv = ["ssh", "-T", "-x", "-a", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=" + " ".join(target.known_hosts),
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={max(1, int(timeout))}",
            "-o", f"ServerAliveInterval={max(1, int(timeout / 3))}", "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR", "-c", CIPHERS, "-p", str(target.port)]
    if target.ssh_config and Path(target.ssh_config).is_file():
        argv += ["-F", target.ssh_config]
    if target.user:
        argv += ["-l", target.user]
    for key in target.identities:
        argv += ["-i", key]
    if target.identities:
        argv += ["-o", "IdentitiesOnly=yes"]
    if target.proxy_command and target.proxy_command.lower() != "none":
        argv += ["-o", f"ProxyCommand={target.proxy_command}"]
    if target.proxy_jump and target.proxy_jump.lower() != "none":
        argv += ["-J", target.proxy_jump]
    return [*argv, target.hostname]


def _remote_range(path: str, start: int, length: int) -> str:
    return f"tail -c +{start + 1} {path} | head -c {length}"


def pull_openssh(target: SSHTarget, path: str, event: Announced, out: Path, bar: bool,
                 timeout: float, streams: int = 0, pace: Pace | None = None) -> PullResult:
    """Pull one archive with the ssh binary: where it resumed, how long it took."""
    if not SAFE_PATH.match(path):
        raise UsageError(f"the host's archive path {path!r} has characters a shell could misread",
                         "use the stream transfer")
    size = event.size
    n = streams or (DEFAULT_STREAMS if size >= SLOW_LINK_FROM else 1)
    return _pull_ranges(ssh_argv(target, timeout), path, event, out, bar, n, target.alias,
                        Deadlines(target.alias, timeout, pace))


def _finish(proc: subprocess.Popen[bytes], where: str) -> None:
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if code != 0:
        text = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        said = text.strip().splitlines() or [""]
        raise RemoteConnectError(f"ssh to {where} ended with status {code} during the pull: {said[-1][:200]}",
                                 "run the same command again: the pull resumes")


class Deadlines:
    """The ranges' shared clocks: silence (no byte from any range for `timeout` s), the fetch's
    `Pace`, and a stop flag once one range failed (the others end their ssh then)."""

    def __init__(self, where: str, timeout: float, pace: Pace | None) -> None:
        self.where, self.timeout, self.pace = where, timeout, pace
        self.last, self.stop = time.monotonic(), threading.Event()

    def moved(self, n: int) -> None:
        self.last = time.monotonic()
        if self.pace is not None:
            self.pace.moved(n)

    def check(self) -> None:
        if self.stop.is_set():
            raise RemoteConnectError(f"a pull from {self.where} was ended", "")  # another range's error wins
        if self.pace is not None:
            self.pace.check()
        if time.monotonic() - self.last > self.timeout:
            raise RemoteConnectError(f"{self.where} went silent past the deadline", "the host or network "
                                     "stalled; run again (pulls resume), or raise the deadline")


def _read_range(proc: subprocess.Popen[bytes], fd: int, start: int, end: int, lock: threading.Lock,
                progress: ProgressBar, deadlines: Deadlines) -> int:
    """Write what one ssh sends into the part at its place until `end` or its end; returns where it got."""
    assert proc.stdout is not None
    pipe, pos = proc.stdout.fileno(), start
    while pos < end:
        if not select.select([pipe], [], [], POLL_S)[0]:
            with lock:
                deadlines.check()
            continue
        chunk = os.read(pipe, min(READ, end - pos))
        if not chunk:
            break
        os.pwrite(fd, chunk, pos)
        pos += len(chunk)
        with lock:
            progress.update(len(chunk))
            deadlines.moved(len(chunk))
            deadlines.check()
    return pos


def _pull_ranges(argv: list[str], path: str, event: Announced, out: Path, bar: bool, n: int,
                 where: str, deadlines: Deadlines | None = None) -> PullResult:
    """N ssh streams, one range each, written in place; the whole part hashed at the end."""
    size = event.size
    part = Part(out, event.archive, size, event.sha256)
    step = max(1, -(-size // n))
    ranges: list[Range] = [[s, min(size, s + step)] for s in range(0, size, step)]
    done = part.ranges_done(ranges)
    todo = [r for r in ranges if r not in done]
    resumed = sum(e - s for s, e in ranges) - sum(e - s for s, e in todo)
    t0 = time.monotonic()
    progress = ProgressBar(event.archive, size, resumed, bar)
    lock = threading.Lock()
    failures: list[BaseException] = []
    deadlines = deadlines or Deadlines(where, float("inf"), None)
    fd = part.open_in_place()
    try:
        def fetch_range(start: int, end: int) -> None:
            try:
                proc = subprocess.Popen([*argv, _remote_range(path, start, end - start)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, env=child_env())
                assert proc.stdout is not None
                try:
                    pos = _read_range(proc, fd, start, end, lock, progress, deadlines)
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
                finally:
                    proc.stdout.close()
                _finish(proc, where)
                if pos != end:
                    raise RemoteConnectError(f"ssh to {where} ended {end - pos} bytes early",
                                             "run the same command again: the pull resumes")
                with lock:
                    done.append([start, end])
                    part.record_ranges(ranges, done)
            except BaseException as exc:  # handed to the caller
                failures.append(exc)
                deadlines.stop.set()

        threads = [threading.Thread(target=fetch_range, args=r, daemon=True) for r in todo]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)
    if failures:
        raise failures[0]
    if not part.settle():
        raise IntegrityError(f"{event.archive}: received bytes do not match the host's sha256 "
                             f"{event.sha256[:16]}…",
                             "nothing was kept; run again (or use the stream transfer)")
    return PullResult(resumed, time.monotonic() - t0)
