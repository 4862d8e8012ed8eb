"""`provision fetch`'s fetching: download on a clean host (over SSH, or --local), pack, pull back, check.

Plan, then execute. The plan checks every input that needs no connection (endpoint URL, key files,
HF_HUB_OFFLINE, repo specs, the remote Python's name). Then `agent.py` runs there through one
fixed command, fed its program and parameters on stdin; it reports the host's download progress
every second (life, for the deadline) and packs each revision. Each archive is pulled into
``NAME.part``, hashed while received (resuming from the part), checked against the host's sha256,
renamed into place, held to the acceptance rule restore and check apply (docs/accepted.md, the
host's announcement its declaration) and recorded in manifest.json + SHA256SUMS; one it refuses is
removed. An archive already here with the right sha256 is not pulled again. Then each is compared
with the Hub's own listing, asked from here without credentials (`anchor_pulled`). What comes
next (every blob hashed, the restore, the verify) is `pipeline`'s: it is handed what the rule read
of each archive (`Fetched.admitted`), so that it does not read the headers again.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..console import ProgressFn
from ..errors import HostMisbehaved, IntegrityError, ProvisionError, RemoteDownloadError
from ..hub.manifest import record
from .client import LOCAL_WHERE, AgentLink, Pulled, remote_path, run_agent, stream_source
from .events import Packed
from .protocol import Stream
from .pull import PullResult, pull
from .request import FetchRequest, check_python, check_request, remote_command
from .shipped import BOOT

if TYPE_CHECKING:
    from ..archive.contents import ArchiveContents

AGENT_EXIT_S = 5.0  # once we hang up, a local agent has this long to remove its folders and exit


@dataclass
class Fetched:
    """What a fetch kept: each archive (received against the sha256 its manifest entry records, held
    to the acceptance rule, anchored at the Hub) and, by its resolved path, what the rule read of it
    (`trust.accept.admit`). The contents are the blob pass's to take, once (`pipeline.hash_blobs`):
    its read lets go of their members."""

    pulled: list[Pulled]
    admitted: dict[Path, ArchiveContents] = field(default_factory=dict, repr=False)


def check_pulled(pulled: list[Pulled], out: Path) -> dict[Path, ArchiveContents]:
    """Hold each archive to the acceptance rule with the host's announcement as its declaration,
    as restore and check do with the manifest, and record those it admits; returns what the rule
    read of each, by resolved path. One it refuses is removed: nothing unrecorded stays for a
    later restore to take as a hand-made backup."""
    from ..trust.accept import admit

    admitted: dict[Path, ArchiveContents] = {}
    refused = []
    for p in pulled:
        try:
            admitted[p.archive.resolve()] = admit(p.archive, p.entry)
        except ProvisionError as exc:
            p.archive.unlink(missing_ok=True)
            refused.append(f"{p.archive.name} is not what the host announced: {exc.message}")
    if admitted:
        record(out, [p.entry for p in pulled if p.archive.resolve() in admitted])
    if refused:
        kept = f"; the {len(admitted)} others were checked and recorded" if admitted else ""
        raise HostMisbehaved(refused[0], f"it was removed{kept}; use a host you trust")
    return admitted


def anchor_pulled(pulled: list[Pulled], req: FetchRequest, progress: ProgressFn) -> list[Pulled]:
    """Each archive against the Hub's listing of the revision asked, from this machine without
    credentials (`trust.hub_check`), recorded in the manifest either way; one that disagrees is
    removed from the out folder and its manifest, and the fetch fails naming it."""
    from ..trust.hub_check import check_entry
    from ..trust.hub_listing import endpoint_of

    endpoint = endpoint_of(req.endpoint)
    revisions = {(s.repo_id, s.repo_type): s.revision or "main" for s in req.specs}
    kept: list[Pulled] = []
    failed: list[IntegrityError] = []
    for p in pulled:
        progress(f"asking {endpoint} for the listing of {p.entry.repo_id}@{p.entry.commit[:12]}…")
        try:
            hub = check_entry(p.entry, endpoint, revisions.get((p.entry.repo_id, p.entry.repo_type),
                                                                p.entry.commit),
                              include=req.include, exclude=req.exclude, token=req.token,
                              hint=f"nothing of it was kept ({p.archive.name} is removed from {req.out} and "
                                   "its manifest); the revision may have moved since the host downloaded it: "
                                   "fetch again; if it differs again, the host or its endpoint hands out "
                                   "another model than the Hub")
        except IntegrityError as exc:
            p.archive.unlink(missing_ok=True)
            failed.append(exc)
            continue
        kept.append(replace(p, entry=replace(p.entry, hub=hub)))
    record(req.out, [p.entry for p in kept])  # drops the removed ones
    if failed:
        raise failed[0]
    return kept


def fetch_remote(req: FetchRequest, progress: ProgressFn, bar: bool) -> Fetched:
    """Run the agent on an SSH host and pull its archives (OpenSSH's ranged pull, or the agent's channel)."""
    import paramiko

    from .openssh import channel_part, pull_openssh, use_openssh, worth_openssh
    from .ssh import connect, resolve_target

    target = resolve_target(req.host or "", **req.ssh)
    python = req.python or "python3"
    progress(f"connecting to {target.describe()}…")
    with connect(target, req.timeout, req.accept_new_host_key, progress) as conn:
        rtt = conn.round_trip()
        chan = conn.exec(remote_command(python))
        try:
            stream = Stream(chan.recv, chan.sendall, target.alias, (paramiko.SSHException,))
            link = AgentLink(stream, lambda: _channel_end(chan), python, live=streams_live(req.transfer, rtt))
            if use_openssh(req.transfer, target):
                def puller(e: Packed, out: Path, bar: bool) -> PullResult:
                    t0 = time.monotonic()
                    path = remote_path(stream, e)
                    if req.transfer == "openssh" or (worth_openssh(e.size, time.monotonic() - t0)
                                                     and not channel_part(out, e.archive)):
                        return pull_openssh(target, path, e, out, bar, req.timeout, req.streams, stream.pace)
                    return pull(stream_source(stream, e), e, out, bar)

                link.puller = puller
            pulled = run_agent(link, req.params(), req.out, progress, bar, req.stall)
            if req.debug:
                progress(f"cipher {conn.cipher()}")
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone
                chan.close()
    return Fetched(pulled, check_pulled(pulled, req.out))


def streams_live(transfer: str, rtt: float) -> bool:
    """Whether the archive may come over the agent's channel while it is packed, during the download.

    On a LAN that overlaps download and pull (benchmarks/results/fetch.md); on a slow link one
    window-bound channel loses to OpenSSH's parallel streams after the pack, and an explicit
    --transfer openssh is what the user asked for."""
    from .openssh import SLOW_LINK_RTT_S

    return transfer == "stream" or (transfer == "auto" and rtt <= SLOW_LINK_RTT_S)


def _channel_end(chan: Any) -> tuple[int | None, str]:
    """The remote command's exit status and stderr, once its stdout has ended. As for a local agent,
    we hang up first (EOF on its stdin) and give it `AGENT_EXIT_S` to exit: its status comes after
    the end of its output, and without waiting for it the diagnosis could come out empty."""
    with contextlib.suppress(Exception):  # a connection already gone: what it left is read below
        chan.shutdown_write()
        chan.status_event.wait(AGENT_EXIT_S)
    with contextlib.suppress(Exception):
        stderr = b""
        while chan.recv_stderr_ready():
            stderr += chan.recv_stderr(65536)
        status = chan.recv_exit_status() if chan.exit_status_ready() or chan.closed else None
        return status, stderr.decode(errors="replace")
    return None, ""


def fetch_local(req: FetchRequest, progress: ProgressFn, bar: bool) -> Fetched:
    """The same clean-credential download, on this machine (the Hub is reachable, creds are not)."""
    python = req.python or sys.executable
    try:
        env = {k: v for k, v in os.environ.items() if not (req.token and v == req.token)}  # stdin only
        proc = subprocess.Popen([check_python(python), "-u", "-c", BOOT], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        raise RemoteDownloadError(f"cannot run {python!r} here: {exc.strerror or exc}",
                                  "choose another Python on the host: a Python 3 (by default, this "
                                  "one)") from None
    assert proc.stdin and proc.stdout and proc.stderr
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr

    def ended() -> tuple[int | None, str]:
        with contextlib.suppress(OSError):  # the hang-up: a host blocked reading its stdin ends at its EOF
            stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):  # one that ignores it: its status is not known
            proc.wait(timeout=AGENT_EXIT_S)
        if proc.returncode is None:
            return None, ""
        return proc.returncode, stderr.read().decode(errors="replace")

    try:
        link = AgentLink(Stream(_pipe_reader(stdout, req.timeout), _pipe_writer(stdin, req.timeout),
                               LOCAL_WHERE), ended, python)
        pulled = run_agent(link, req.params(), req.out, progress, bar, req.stall)
    finally:
        # the hang-up: EOF on its stdin, and its stdout and stderr closed, so that a host still writing
        # gets EPIPE at once instead of waiting on a full pipe that nobody reads any more
        for pipe in (stdin, stdout, stderr):
            with contextlib.suppress(OSError):
                pipe.close()
        try:  # the agent stops within a second of its stdin closing; anything else is ended
            proc.wait(timeout=AGENT_EXIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return Fetched(pulled, check_pulled(pulled, req.out))


def _pipe_reader(pipe: Any, timeout: float) -> Any:
    """`recv` for a local agent's stdout with the same read deadline an SSH channel has."""
    fd = pipe.fileno()

    def recv(n: int) -> bytes:
        if not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError
        return os.read(fd, n)

    return recv


def _pipe_writer(pipe: Any, timeout: float) -> Callable[[bytes], None]:
    """`send` for a local agent's stdin with the same deadline: a host that stops reading fails
    within `timeout`, as one that stops writing does, instead of blocking on a full pipe."""
    fd = pipe.fileno()
    os.set_blocking(fd, False)

    def send(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                if not select.select([], [fd], [], timeout)[1]:
                    raise TimeoutError from None

    return send


def fetch_archives(req: FetchRequest, progress: ProgressFn, bar: bool = False) -> Fetched:
    """Fetch (remotely or locally): each archive received, admitted and anchored at the Hub. Its
    blobs are hashed next, by the chain that called this (`pipeline`), from what was admitted."""
    check_request(req)
    fetched = fetch_local(req, progress, bar) if req.host is None else fetch_remote(req, progress, bar)
    kept = anchor_pulled(fetched.pulled, req, progress)
    return Fetched(kept, {path: fetched.admitted[path] for path in (p.archive.resolve() for p in kept)})
