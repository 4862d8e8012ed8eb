"""`provision fetch`: download on a clean host (over SSH, or --local), pack, pull back, verify.

Plan, then execute. The plan checks every input that needs no connection (endpoint URL, key files,
HF_HUB_OFFLINE, repo specs, the remote Python's name). Then `agent.py` runs there through one
fixed command, fed its program and parameters on stdin; it reports the host's download progress
every second (life, for the deadline) and packs each revision. Each archive is pulled into
``NAME.part``, hashed while received (resuming from the part), checked against the host's sha256,
renamed into place, recorded in manifest.json + SHA256SUMS, and validated exactly as a restore
would. An archive already here with the right sha256 is not pulled again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import __version__
from .errors import RemoteConnectError, RemoteDownloadError, UsageError
from .fsutil import sha256_file
from .hfcache import RepoSpec
from .layout import FileRecord
from .manifest import ArchiveEntry, record
from .output import ProgressFn
from .remote import TIMEOUT_S
from .transfer import LiveArchive, ProgressBar, Stream, pull, sftp_source, stream_source
from .untrusted_tar import scan_archive

PYTHON_RE = re.compile(r"^[A-Za-z0-9_./+-]{1,200}$")
BOOT = ("import sys;b=sys.stdin.buffer;"
        "exec(compile(b.read(int(b.readline())),'provision-agent','exec'))")
AGENT_MODULES = ("layout.py", "pack.py", "agent.py")  # what the host runs, in this order
PLAIN_PROGRESS_EVERY_S = 5.0  # without a terminal: one line of host progress this often
TRANSFERS = ("auto", "openssh", "stream", "sftp")


def agent_program() -> bytes:
    """layout.py + pack.py + agent.py as one program (one `from __future__` line, at the top)."""
    here = Path(__file__).parent
    future = "from __future__ import annotations\n"
    sources = [(here / name).read_text().replace(future, "") for name in AGENT_MODULES]
    return (future + "\n\n".join(sources)).encode()


def check_python(python: str) -> str:
    """`--remote-python` goes into a command line: plain path characters only."""
    if not PYTHON_RE.match(python):
        raise UsageError(f"not a usable --remote-python: {python!r}", "pass a path like /usr/bin/python3")
    return python


def remote_command(python: str) -> str:
    """The one fixed command run on the host; everything else travels on stdin."""
    return f"{check_python(python)} -u -c \"{BOOT}\""


@dataclass(frozen=True)
class FetchRequest:
    """Everything `provision fetch` was asked to do: where, what, and what follows the pull."""

    specs: tuple[RepoSpec, ...]
    out: Path
    host: str | None = None  # None: --local
    ssh: dict[str, Any] = field(default_factory=dict)  # port, user, identity, ssh_config, known_hosts
    python: str | None = None
    endpoint: str | None = None
    token: str | None = None
    bootstrap: bool = False
    timeout: float = TIMEOUT_S
    accept_new_host_key: bool = False
    transfer: str = "auto"
    streams: int = 0  # parallel OpenSSH streams per archive; 0: by size
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    fresh: bool = False
    then_restore: Path | None = None  # the cache to restore into (and verify), if any
    verify: Any = None  # a VerifyRequest for after the restore

    def params(self) -> dict[str, Any]:
        """What the agent is told on stdin."""
        return {"repos": [{"repo_id": s.repo_id, "revision": s.revision, "repo_type": s.repo_type,
                           "include": list(self.include), "exclude": list(self.exclude)} for s in self.specs],
                "endpoint": self.endpoint, "token": self.token, "bootstrap": self.bootstrap,
                "fresh": self.fresh}


def check_request(req: FetchRequest) -> None:
    """Everything that can be wrong before any connection: said now, with exit 2."""
    if req.endpoint is not None:
        url = urlsplit(req.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UsageError(f"--endpoint {req.endpoint!r} is not an http(s) URL",
                             "e.g. --endpoint https://hf-mirror.example.org")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    if req.host is None and offline:
        raise UsageError("HF_HUB_OFFLINE is set, and fetch --local downloads from the Hub",
                         "unset HF_HUB_OFFLINE for this command (or fetch on another host with --host)")
    identity = req.ssh.get("identity")
    if identity and not Path(identity).expanduser().is_file():
        raise UsageError(f"no such key file: {identity}", "pass the private key's path to --identity/-i")
    if req.transfer not in TRANSFERS:
        raise UsageError(f"unknown transfer {req.transfer!r}", f"use one of {', '.join(TRANSFERS)}")
    check_python(req.python or "python3")


@dataclass
class Pulled:
    archive: Path
    entry: ArchiveEntry
    resumed_from: int
    seconds: float
    already_here: bool = False
    streamed: bool = False  # received while the host packed it, during its download

    def to_dict(self) -> dict[str, Any]:
        return {"archive": str(self.archive), "repo_id": self.entry.repo_id,
                "repo_type": self.entry.repo_type, "commit": self.entry.commit, "size": self.entry.size,
                "sha256": self.entry.sha256,
                "resumed_from": self.resumed_from, "already_here": self.already_here,
                "streamed": self.streamed,
                "seconds": round(self.seconds, 3),
                "mb_per_s": round(self.entry.size / 1e6 / self.seconds, 1) if self.seconds else None}


def _entry(event: dict[str, Any]) -> ArchiveEntry:
    return ArchiveEntry(
        archive=event["archive"], repo_id=event["repo_id"], commit=event["commit"],
        refs=tuple(event.get("refs", ())),
        files=tuple(FileRecord.from_dict(f) for f in event["files"]),
        sha256=event["sha256"], size=int(event["size"]), compression="none",
        tool_version=__version__, created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        repo_type=event.get("repo_type", "model"))


HINTS = {
    "missing-hub": "install it there (pip install huggingface_hub), point --remote-python at a "
                   "Python that has it, or pass --bootstrap to install it into a temporary folder",
    "repo-not-found": "check the repo id, --repo-type and --endpoint; private repos need --token-env VAR",
    "revision-not-found": "check the revision: a branch, tag or commit of that repo",
    "gated": "accept the model's terms on the Hub, then pass --token-env VAR with your token",
    "unauthorized": "the Hub rejected the request even without stale credentials: check "
                    "--token-env, or the endpoint",
}


def _agent_error(event: dict[str, Any], where: str) -> RemoteDownloadError:
    kind, msg, log = event.get("kind", "agent"), event.get("message", ""), event.get("log", "").strip()
    fallback = f"the host's log ends with: {log[-300:]}" if log else "run again with --debug"
    return RemoteDownloadError(f"download on {where} failed: {msg}", HINTS.get(kind, fallback))


@dataclass
class AgentLink:
    """A running agent: its framed stream, how it ended, and where its archives can be read."""

    stream: Stream
    ended: Callable[[], tuple[int | None, str]]  # (exit status, stderr) once the stream closed
    python: str
    #: pulls one packed archive into the out folder: (event, out, bar) -> (resumed offset, seconds);
    #: None: over the agent's own stream
    puller: Callable[[dict[str, Any], Path, bool], tuple[int, float]] | None = None
    #: the host may send an archive over its stream while packing it, during the download
    live: bool = True


class HostProgress:
    """The host's download progress: a bar on a terminal, else one plain line every few seconds."""

    def __init__(self, where: str, progress: ProgressFn, bar: bool) -> None:
        self.where, self.progress, self.bar = where, progress, bar
        self.bars: dict[str, ProgressBar] = {}
        self.last = 0.0

    def update(self, event: dict[str, Any]) -> None:
        repo, done, total = event["repo_id"], int(event["bytes"]), event.get("total")
        if self.bar:
            pb = self.bars.setdefault(repo, ProgressBar(f"{self.where}: {repo}", total or 0, 0, True))
            pb.update(done - pb.done)
        elif time.monotonic() - self.last >= PLAIN_PROGRESS_EVERY_S:
            self.last = time.monotonic()
            share = f" of {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else ""
            self.progress(f"{self.where}: {repo}: {done / 1e6:.1f} MB downloaded{share}")


def run_agent(link: AgentLink, params: dict[str, Any], out: Path, progress: ProgressFn,
              bar: bool) -> list[Pulled]:
    """Drive the agent: send parameters, follow its download, pull each packed archive."""
    stream = link.stream
    program = agent_program()
    have = sorted({p.name.removesuffix(".part") for p in out.iterdir()}) if out.is_dir() else []
    try:  # a host whose Python never started closes the channel while we are still sending
        stream.send(b"%d\n" % len(program) + program)
        stream.send_json({**params, "stream": link.live, "have": have})
    except RemoteConnectError:
        _diagnose_start(link)
        raise
    packed = _wait_for_archives(link, out, progress, bar)
    out.mkdir(parents=True, exist_ok=True)
    pulled = []
    for event in packed:
        final = out / event["archive"]
        if event.get("received") is not None:
            pulled.append(Pulled(final, _entry(event), 0, event["received"], streamed=True))
            continue
        if (final.is_file() and final.stat().st_size == int(event["size"])
                and sha256_file(final) == event["sha256"]):
            progress(f"{event['archive']} is already here with the right sha256: not pulled again")
            pulled.append(Pulled(final, _entry(event), int(event["size"]), 0.0, already_here=True))
            continue
        if link.puller is not None:
            resumed, seconds = link.puller(event, out, bar)
        else:
            resumed, seconds = pull(stream_source(stream, event), event, out, bar)
        if resumed:
            progress(f"resumed {event['archive']} from byte {resumed}")
        pulled.append(Pulled(final, _entry(event), resumed, seconds))
    stream.send_json({"cmd": "done"})
    with contextlib.suppress(Exception):  # the host removes its work folders, then says bye
        stream.read_json()
    return pulled


def _wait_for_archives(link: AgentLink, out: Path, progress: ProgressFn,
                       bar: bool) -> list[dict[str, Any]]:
    """Events up to ``ready``; archives the host sends while packing them are received on the way
    (their ``packed`` event then carries ``received``: the seconds it took). A host that ends
    before saying hello is diagnosed from its exit."""
    stream, packed, hello = link.stream, [], False
    host = HostProgress(stream.where, progress, bar)
    live: LiveArchive | None = None
    try:
        while True:
            try:
                event = stream.read_json()
            except Exception:
                if not hello:
                    _diagnose_start(link)
                raise
            kind = event.get("event")
            if kind == "chunk":
                if live is None:
                    raise RemoteDownloadError(f"{stream.where} sent archive bytes it had not announced",
                                              "run again; if it persists, with --transfer openssh")
                live.add(stream.read_exact(int(event["length"])))
            elif kind == "error":
                raise _agent_error(event, stream.where)
            elif kind == "hello":
                hello = True
                progress(f"{stream.where}: huggingface_hub {event['huggingface_hub']}, "
                         f"Python {event['python']}")
            elif kind == "download":
                host.update(event)
            elif kind == "progress":
                progress(f"{stream.where}: {event['message']}")
            elif kind == "stream":
                live = LiveArchive(out, event["archive"])
            elif kind == "stream-void" and live is not None:
                progress(f"{stream.where}: packing again after the download ({event.get('why')})")
                live.discard()
                live = None
            elif kind == "packed":
                if event.get("streamed") and live is not None:
                    event["received"], live = live.finish(int(event["size"]), event["sha256"]), None
                progress(f"{stream.where}: packed {event['archive']} ({event['size'] / 1e6:.1f} MB, "
                         f"sha256 {event['sha256'][:16]}…)"
                         + (", received while packed" if event.get("received") is not None else ""))
                packed.append(event)
            elif kind == "ready":
                return packed
    finally:
        if live is not None:  # cut mid-stream: the part is a prefix of the archive; the next run resumes it
            live.close()


def _diagnose_start(link: AgentLink) -> None:
    """The agent never started: say why (no such Python, a shell that prints, ...)."""
    status, stderr = link.ended()
    said = (stderr.strip().splitlines() or [""])[-1][:200]
    if status == 127 or "not found" in said or "No such file" in said:
        raise RemoteDownloadError(f"{link.stream.where} cannot run {link.python!r}: {said or 'not found'}",
                                  "point --remote-python at a Python 3 on that host (e.g. /usr/bin/python3)")
    if status is not None:
        raise RemoteDownloadError(f"{link.python} on {link.stream.where} exited with status {status} before "
                                  f"starting the agent{': ' + said if said else ''}",
                                  "check --remote-python (a Python 3.8+ with huggingface_hub, or "
                                  "--bootstrap)")


def check_pulled(pulled: list[Pulled], out: Path) -> None:
    """Validate each archive as a restore would, then record it in the manifest."""
    for p in pulled:
        scan_archive(p.archive, p.entry.blob_sizes())
    record(out, [p.entry for p in pulled])


def fetch_remote(req: FetchRequest, progress: ProgressFn, bar: bool) -> list[Pulled]:
    """Run the agent on an SSH host and pull its archives (OpenSSH, the exec channel, or SFTP)."""
    import paramiko

    from .openssh import pull_openssh, use_openssh, worth_openssh
    from .remote import connect, resolve_target

    target = resolve_target(req.host or "", **req.ssh)
    python = req.python or "python3"
    progress(f"connecting to {target.describe()}…")
    with connect(target, req.timeout, req.accept_new_host_key) as conn:
        rtt = conn.round_trip()
        chan = conn.exec(remote_command(python))
        try:
            stream = Stream(chan.recv, chan.sendall, target.alias, (paramiko.SSHException,))
            link = AgentLink(stream, lambda: _channel_end(chan), python, live=streams_live(req.transfer, rtt))
            if req.transfer == "sftp":
                sftp = conn.open_sftp()
                link.puller = lambda e, out, bar: pull(
                    sftp_source(sftp, _remote_path(stream, e), stream.where), e, out, bar)
            elif use_openssh(req.transfer, target):
                def puller(e: dict[str, Any], out: Path, bar: bool) -> tuple[int, float]:
                    t0 = time.monotonic()
                    path = _remote_path(stream, e)
                    if req.transfer == "openssh" or worth_openssh(int(e["size"]), time.monotonic() - t0):
                        return pull_openssh(target, path, e, out, bar, req.timeout, req.streams)
                    return pull(stream_source(stream, e), e, out, bar)

                link.puller = puller
            pulled = run_agent(link, req.params(), req.out, progress, bar)
            progress(f"cipher {conn.cipher()}")
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone
                chan.close()
    check_pulled(pulled, req.out)
    return pulled


def streams_live(transfer: str, rtt: float) -> bool:
    """Whether the archive may come over the agent's channel while it is packed, during the download.

    On a LAN that overlaps download and pull (benchmarks/results/fetch.md); on a slow link one
    window-bound channel loses to OpenSSH's parallel streams after the pack, and an explicit
    --transfer openssh/sftp is what the user asked for."""
    from .openssh import SLOW_LINK_RTT_S

    return transfer == "stream" or (transfer == "auto" and rtt <= SLOW_LINK_RTT_S)


def _remote_path(stream: Stream, event: dict[str, Any]) -> str:
    stream.send_json({"cmd": "path", "archive": event["archive"]})
    return str(stream.read_json()["path"])


def _channel_end(chan: Any) -> tuple[int | None, str]:
    """The remote command's exit status and stderr, once its channel has closed."""
    with contextlib.suppress(Exception):
        stderr = b""
        while chan.recv_stderr_ready():
            stderr += chan.recv_stderr(65536)
        status = chan.recv_exit_status() if chan.exit_status_ready() or chan.closed else None
        return status, stderr.decode(errors="replace")
    return None, ""


def fetch_local(req: FetchRequest, progress: ProgressFn, bar: bool) -> list[Pulled]:
    """The same clean-credential download, on this machine (the Hub is reachable, creds are not)."""
    python = req.python or sys.executable
    try:
        env = {k: v for k, v in os.environ.items() if not (req.token and v == req.token)}  # stdin only
        proc = subprocess.Popen([check_python(python), "-u", "-c", BOOT], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        raise RemoteDownloadError(f"cannot run {python!r} here: {exc.strerror or exc}",
                                  "point --remote-python at a Python 3 (default: this one)") from None
    assert proc.stdin and proc.stdout and proc.stderr

    def send(data: bytes) -> None:
        proc.stdin.write(data)
        proc.stdin.flush()

    def ended() -> tuple[int | None, str]:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.returncode is None:
            return None, ""
        return proc.returncode, proc.stderr.read().decode(errors="replace")

    try:
        link = AgentLink(Stream(proc.stdout.read1, send, "this machine"), ended, python)
        pulled = run_agent(link, req.params(), req.out, progress, bar)
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    check_pulled(pulled, req.out)
    return pulled


def fetch(req: FetchRequest, progress: ProgressFn, bar: bool = False) -> dict[str, Any]:
    """Fetch (remotely or locally), then optionally restore and verify: the whole chain."""
    check_request(req)
    pulled = fetch_local(req, progress, bar) if req.host is None else fetch_remote(req, progress, bar)
    data: dict[str, Any] = {"out": str(req.out), "archives": [p.to_dict() for p in pulled]}
    if req.then_restore is not None:
        from .restore import restore

        data["restore"] = restore([p.archive for p in pulled], req.then_restore, progress).to_dict()
        edgetam = next((p.entry for p in pulled if p.entry.repo_id == req.verify.repo_id), None)
        if edgetam is not None:
            from .verify import verify_install

            result = verify_install(replace(req.verify, revision=edgetam.commit), progress=progress)
            data["verify"] = result.pop("report")
            data.update({k: v for k, v in result.items() if k != "note"})
    return data
