"""`provision fetch`: download on a clean host (over SSH, or --local), pack, pull back, verify.

Plan: validate the repo specs and the remote Python, then run `agent.py` there through one fixed
command, feeding it its program and parameters on stdin. Pull each archive into ``NAME.part``,
hashing while receiving (resuming from the part's size when the agent holds the same bytes),
check the whole-file sha256, rename into place, record manifest.json + SHA256SUMS, and validate
the archive exactly as a restore would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import __version__
from .errors import RemoteDownloadError, UsageError
from .hfcache import RepoSpec
from .layout import FileRecord
from .manifest import ArchiveEntry, record
from .output import ProgressFn
from .remote import TIMEOUT_S
from .transfer import Stream, pull, sftp_source, stream_source
from .untrusted_tar import scan_archive

PYTHON_RE = re.compile(r"^[A-Za-z0-9_./+-]{1,200}$")
BOOT = ("import sys;b=sys.stdin.buffer;"
        "exec(compile(b.read(int(b.readline())),'provision-agent','exec'))")


AGENT_MODULES = ("layout.py", "pack.py", "agent.py")  # what the host runs, in this order


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


@dataclass
class Pulled:
    archive: Path
    entry: ArchiveEntry
    resumed_from: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"archive": str(self.archive), "repo_id": self.entry.repo_id, "commit": self.entry.commit,
                "size": self.entry.size, "sha256": self.entry.sha256, "resumed_from": self.resumed_from,
                "seconds": round(self.seconds, 3),
                "mb_per_s": round(self.entry.size / 1e6 / self.seconds, 1) if self.seconds else None}


def _entry(event: dict[str, Any]) -> ArchiveEntry:
    return ArchiveEntry(
        archive=event["archive"], repo_id=event["repo_id"], commit=event["commit"],
        refs=tuple(event.get("refs", ())),
        files=tuple(FileRecord.from_dict(f) for f in event["files"]),
        sha256=event["sha256"], size=int(event["size"]), compression="none",
        tool_version=__version__, created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


def _agent_error(event: dict[str, Any], where: str) -> RemoteDownloadError:
    kind, msg = event.get("kind", "agent"), event.get("message", "")
    hints = {
        "missing-hub": "install it there (pip install huggingface_hub), point --remote-python at a "
                       "Python that has it, or pass --bootstrap to install it into a temporary folder",
        "repo-not-found": "check the repo id (and --endpoint); private repos need --token-env VAR",
        "revision-not-found": "check the revision: a branch, tag or commit of that repo",
        "gated": "accept the model's terms on the Hub, then pass --token-env VAR with your token",
        "unauthorized": "the Hub rejected the request even without stale credentials: check "
                        "--token-env, or the endpoint",
    }
    return RemoteDownloadError(f"download on {where} failed: {msg}",
                               hints.get(kind, "see the host's log: " + event.get("log", "")[-300:]))


def run_agent(stream: Stream, params: dict[str, Any], out: Path, progress: ProgressFn,
              bar: bool, sftp: Any = None) -> list[Pulled]:
    """Drive the agent: send parameters, wait for the packed archives, pull each one."""
    program = agent_program()
    stream.send(b"%d\n" % len(program) + program)
    stream.send_json(params)
    packed: list[dict[str, Any]] = []
    while True:
        event = stream.read_json()
        kind = event.get("event")
        if kind == "error":
            raise _agent_error(event, stream.where)
        if kind == "hello":
            progress(f"{stream.where}: huggingface_hub {event['huggingface_hub']}, "
                     f"Python {event['python']}")
        elif kind == "progress":
            progress(f"{stream.where}: {event['message']}")
        elif kind == "packed":
            progress(f"{stream.where}: packed {event['archive']} ({event['size'] / 1e6:.1f} MB, "
                     f"sha256 {event['sha256'][:16]}…)")
            packed.append(event)
        elif kind == "ready":
            break
    out.mkdir(parents=True, exist_ok=True)
    pulled = []
    for event in packed:
        source = stream_source(stream, event["archive"])
        if sftp is not None:
            stream.send_json({"cmd": "path", "archive": event["archive"]})
            source = sftp_source(sftp, stream.read_json()["path"], stream.where)
        resumed, seconds = pull(source, event, out, bar)
        if resumed:
            progress(f"resumed {event['archive']} from byte {resumed}")
        pulled.append(Pulled(out / event["archive"], _entry(event), resumed, seconds))
    stream.send_json({"cmd": "done"})
    return pulled


def check_pulled(pulled: list[Pulled], out: Path) -> None:
    """Validate each archive as a restore would, then record it in the manifest."""
    for p in pulled:
        scan_archive(p.archive, p.entry.blob_sizes())
    record(out, [p.entry for p in pulled])


def fetch_params(specs: list[RepoSpec], endpoint: str | None, token: str | None,
                 bootstrap: bool) -> dict[str, Any]:
    return {"repos": [{"repo_id": s.repo_id, "revision": s.revision} for s in specs],
            "endpoint": endpoint, "token": token, "bootstrap": bootstrap}


def fetch_remote(target: Any, params: dict[str, Any], out: Path, *, python: str, timeout: float,
                 accept_new: bool, progress: ProgressFn, bar: bool, transfer: str = "stream") -> list[Pulled]:
    """Run the agent on an SSH host and pull its archives (over its channel, or over SFTP)."""
    import paramiko

    from .remote import connect

    command = remote_command(python)
    progress(f"connecting to {target.describe()}…")
    with connect(target, timeout, accept_new) as conn:
        chan = conn.exec(command)
        try:
            stream = Stream(chan.recv, chan.sendall, target.alias, (paramiko.SSHException,))
            sftp = conn.open_sftp() if transfer == "sftp" else None
            pulled = run_agent(stream, params, out, progress, bar, sftp)
            progress(f"cipher {conn.cipher()}")
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone
                chan.close()
    check_pulled(pulled, out)
    return pulled


def fetch_local(params: dict[str, Any], out: Path, *, python: str, progress: ProgressFn,
                bar: bool) -> list[Pulled]:
    """The same clean-credential download, on this machine (the Hub is reachable, creds are not)."""
    proc = subprocess.Popen([check_python(python), "-u", "-c", BOOT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin and proc.stdout

    def send(data: bytes) -> None:
        proc.stdin.write(data)
        proc.stdin.flush()

    try:
        pulled = run_agent(Stream(proc.stdout.read1, send, "this machine"), params, out, progress, bar)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    check_pulled(pulled, out)
    return pulled


@dataclass(frozen=True)
class FetchRequest:
    """Everything `provision fetch` was asked to do: where, what, and what follows the pull."""

    specs: tuple[RepoSpec, ...]
    out: Path
    host: str | None = None  # None: --local
    ssh: dict[str, Any] | None = None  # port, user, identity, ssh_config, known_hosts
    python: str | None = None
    endpoint: str | None = None
    token: str | None = None
    bootstrap: bool = False
    timeout: float = TIMEOUT_S
    accept_new_host_key: bool = False
    transfer: str = "stream"
    then_restore: Path | None = None  # the cache to restore into (and verify), if any
    verify: Any = None  # a VerifyRequest for after the restore


def fetch(req: FetchRequest, progress: ProgressFn, bar: bool = False) -> dict[str, Any]:
    """Fetch (remotely or locally), then optionally restore and verify: the whole chain."""
    params = fetch_params(list(req.specs), req.endpoint, req.token, req.bootstrap)
    if req.host is None:
        pulled = fetch_local(params, req.out, python=req.python or sys.executable, progress=progress, bar=bar)
    else:
        from .remote import resolve_target

        target = resolve_target(req.host, **(req.ssh or {}))
        pulled = fetch_remote(target, params, req.out, python=req.python or "python3", timeout=req.timeout,
                              accept_new=req.accept_new_host_key, progress=progress, bar=bar,
                              transfer=req.transfer)
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
