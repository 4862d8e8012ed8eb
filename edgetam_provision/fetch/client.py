"""The client side of the agent protocol: send the agent (`remote/`) and parameters, follow the host's
events, receive or pull each archive, and hold the host to what was asked.

The host is not trusted. Every event comes through `protocol.Stream.read_event` (bounded, checked
against the protocol table); beyond that, each archive must be one that was asked for (repo, repo
type, the pinned commit if one was given) under its one right name, placed under ``--out`` by us;
sizes are declared before the first byte (a stream's too) and must fit the disk then; no byte
past a declared size is taken; a host that moves too little in a ``stall`` window is given up
(`pace.Pace`). A violation is `HostMisbehaved`, and every archive and part the host sent in
that run is removed (`Received`): none of it was recorded yet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..console import ProgressFn, clean, human_size
from ..errors import HostMisbehaved, RemoteConnectError, RemoteDownloadError
from ..hub.layout import COMMIT_RE, archive_name, repo_folder_name
from ..hub.manifest import ArchiveEntry
from ..integrity import space
from ..integrity.hashing import sha256_file
from ..integrity.receive import PART, Part, part_files
from . import events as ev
from .pace import Declared, Pace
from .protocol import Stream
from .pull import Announced, LiveArchive, ProgressBar, PullResult, Source, pull
from .shipped import shipment

PLAIN_PROGRESS_EVERY_S = 5.0  # without a terminal: one line of host progress this often
SPACE_RESERVE = 64 * 1024 * 1024  # what a pull leaves free on the disk of --out
TAR_OVERHEAD = 2048  # bytes a tar spends per member beyond its data, at most (header + padding)
LOCAL_WHERE = "this machine"  # a --local agent's name in messages

HINTS = {
    "missing-hub": "install it there (pip install huggingface_hub), choose another Python on the host "
                   "that has it, or install it into a temporary folder for this run",
    "repo-not-found": "check the repo id, the repo type and the endpoint URL; private repos need your token "
                      "from an environment variable",
    "revision-not-found": "check the revision: a branch, tag or commit of that repo",
    "gated": "accept the model's terms on the Hub, then pass your token from an environment variable",
    "unauthorized": "the Hub rejected the request even without stale credentials: check your token "
                    "from an environment variable, or the endpoint",
    "no-match": "check the patterns: globs as hf download takes them, e.g. include patterns '*.json'",
    "endpoint-unreachable": "this machine's HF_ENDPOINT is not passed to the host (it uses its own, or "
                            "huggingface.co): pass an endpoint URL with an endpoint the host can resolve "
                            "and reach",
    "endpoint-unreachable/here": "check the network, HF_ENDPOINT, or pass an endpoint URL with an endpoint "
                                 "this machine can reach",
}


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
                "transfer_mb_per_s": round(self.entry.size / 1e6 / self.seconds, 1) if self.seconds else None}


@dataclass
class AgentLink:
    """A running agent: its framed stream, how it ended, and where its archives can be read."""

    stream: Stream
    #: once the host closed the stream: (exit status, stderr), None while it still runs; a wait for its
    #: exit hangs up on it first (its stdin closed, as an SSH hang-up does)
    ended: Callable[[], tuple[int | None, str]]
    python: str
    #: pulls one packed archive into the out folder: (event, out, bar) -> its result;
    #: None: over the agent's own stream
    puller: Callable[[ev.Packed, Path, bool], PullResult] | None = None
    #: the host may send an archive over its stream while packing it, during the download
    live: bool = True


class Asked:
    """What was asked for (the parameters' repos), and what the host has answered: each repo once,
    under its one right name (a filtered download has its own)."""

    def __init__(self, repos: list[dict[str, Any]], where: str) -> None:
        self.open, self.where = list(repos), where
        self.repo_ids = {r["repo_id"] for r in repos}
        self.streamed: set[str] = set()  # repo folders that announced a stream (once each)

    def folders(self) -> set[str]:
        return {repo_folder_name(r["repo_id"], r["repo_type"]) for r in self.open}

    def streamable(self, name: str) -> None:
        """A ``stream`` event's archive must be one of a repo not yet answered, announced once."""
        folder = name.rsplit("--", 1)[0]
        if folder not in self.folders():
            raise HostMisbehaved(f"{self.where} announced {name}, which was not asked for")
        if folder in self.streamed:
            raise HostMisbehaved(f"{self.where} announced a second stream for {folder}")
        self.streamed.add(folder)

    def answer(self, event: ev.Packed) -> None:
        """Match a ``packed`` event to its repo, or refuse it."""
        repo_id, repo_type, commit = event.repo_id, event.repo_type, event.commit
        asked = next((r for r in self.open if (r["repo_id"], r["repo_type"]) == (repo_id, repo_type)), None)
        if asked is None:
            raise HostMisbehaved(f"{self.where} sent {repo_type} {repo_id}, which was not asked for "
                                 "(or was already sent)")
        pinned = asked.get("revision") or ""
        if COMMIT_RE.match(pinned) and commit != pinned:
            raise HostMisbehaved(f"{self.where} answered {repo_id}@{pinned[:12]} with another "
                                 f"commit, {commit[:12]}")
        name = archive_name(repo_id, commit, ".tar", repo_type, asked.get("include") or (),
                            asked.get("exclude") or ())
        if event.archive != name:
            raise HostMisbehaved(f"{self.where} named the archive of {repo_id}@{commit[:12]} "
                                 f"{event.archive!r}")
        blobs = {f.blob: f.size for f in event.files}
        least = sum(blobs.values())
        most = least + TAR_OVERHEAD * (2 * len(event.files) + len(event.refs) + 16) + 10240
        if not least <= event.size <= most:
            raise HostMisbehaved(f"{self.where} said {event.archive} has {event.size} bytes, which "
                                 f"cannot hold its {len(event.files)} files ({least} bytes)")
        self.open.remove(asked)

    def complete(self) -> None:
        if self.open:
            missing = ", ".join(r["repo_id"] for r in self.open)
            raise HostMisbehaved(f"{self.where} said it was ready without sending {missing}")


def ensure_space(out: Path, needed: int, name: str, kept: str = "what arrived so far is kept") -> None:
    """Refuse before writing when `needed` more bytes would not fit in `out` (leaving a reserve)."""
    space.ensure_space(out, needed, name, folder_words="output folder", kept=kept, reserve=SPACE_RESERVE)


def entry_of(event: ev.Packed) -> ArchiveEntry:
    return ArchiveEntry(
        archive=event.archive, repo_id=event.repo_id, commit=event.commit, refs=event.refs,
        files=event.files, sha256=event.sha256, size=event.size, compression="none",
        tool_version=__version__, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        repo_type=event.repo_type)


def agent_error(event: ev.HostError, where: str) -> RemoteDownloadError:
    kind, msg, log = event.kind, clean(event.message), clean(event.log.strip())
    fallback = f"the host's log ends with: {log[-300:]}" if log else "run it again with tracebacks shown"
    here = HINTS.get(f"{kind}/here") if where == LOCAL_WHERE else None  # --local: this environment's
    return RemoteDownloadError(f"download on {where} failed: {msg}", here or HINTS.get(kind, fallback))


class HostProgress:
    """The host's download progress: a bar on a terminal, else one plain line every few seconds;
    what advances is credited to the fetch's `Pace` (`Declared`)."""

    def __init__(self, where: str, progress: ProgressFn, bar: bool, declared: Declared) -> None:
        self.where, self.progress, self.bar, self.declared = where, progress, bar, declared
        self.bars: dict[str, ProgressBar] = {}
        self.last = 0.0

    def finish(self, repo: str) -> None:
        """The repo's download is over: its bar's line is ended before anything else is said."""
        bar = self.bars.pop(repo, None)
        if bar is not None:
            bar.close()

    def update(self, event: ev.Download) -> None:
        repo, done, total = event.repo_id, event.bytes, event.total
        if repo not in self.declared.repos:
            raise HostMisbehaved(f"{self.where} reported a download of {repo}, which was not asked for")
        self.declared.report(repo, done, total)
        if self.bar:
            if repo not in self.bars:  # starts at what the host had (a resumed download): not this run's rate
                self.bars[repo] = ProgressBar(f"{self.where}: {repo}", total or 0, done, True)
            pb = self.bars[repo]
            pb.update(done - pb.done)
        elif time.monotonic() - self.last >= PLAIN_PROGRESS_EVERY_S:
            self.last = time.monotonic()
            share = f" of {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else ""
            self.progress(f"{self.where}: {repo}: {done / 1e6:.1f} MB downloaded{share}")


def run_agent(link: AgentLink, params: dict[str, Any], out: Path, progress: ProgressFn, bar: bool,
              stall: float) -> list[Pulled]:
    """Drive the agent: send parameters, follow its download, pull each packed archive. Every read
    runs under the fetch's `Pace`; a violation removes what this run received (`Received`)."""
    stream = link.stream
    stream.pace = Pace(stream.where, stall)
    have = sorted({p.name.removesuffix(PART) for p in out.iterdir()}) if out.is_dir() else []
    try:  # a host whose Python never started closes the channel while we are still sending
        stream.send(shipment())
        stream.send_json({**params, "stream": link.live, "have": have})
    except RemoteConnectError:
        if stream.closed_by_host:
            diagnose_start(link)
        raise
    received = Received(out)
    try:
        asked = Asked(params.get("repos", []), stream.where)
        packed = _wait_for_archives(link, asked, out, progress, bar, received)
        pulled = _pull_all(link, packed, out, progress, bar, received)
    except HostMisbehaved as exc:
        raise HostMisbehaved(exc.message, received.discard()) from None
    stream.send_json({"cmd": "done"})
    with contextlib.suppress(RemoteConnectError, HostMisbehaved):  # it removes its work folders, says bye
        stream.read_event()
    return pulled


class Received:
    """What this run wrote into ``out`` for the host (whole archives, parts): none of it is in the
    manifest before the run ends, so a violation removes all of it."""

    def __init__(self, out: Path) -> None:
        self.out, self.names = out, set()  # type: Path, set[str]

    def add(self, name: str) -> None:
        self.names.add(name)

    def discard(self) -> str:
        """Remove it all; the hint that says so."""
        gone = 0
        for name in self.names:
            for path in part_files(self.out, name):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    gone += path.suffix != ".ranges"
        removed = f" ({gone} file{'s' * (gone != 1)} removed)" if gone else ""
        return (f"nothing it sent in this run was kept{removed}; whole archives that were in the folder "
                "before the run are as they were; use a host you trust, or run it again with tracebacks "
                "shown and report it if the host is yours")


def _pull_all(link: AgentLink, packed: list[tuple[ev.Packed, float | None]], out: Path, progress: ProgressFn,
              bar: bool, received: Received) -> list[Pulled]:
    """Each packed archive into `out`: received while packed (the seconds it took), already here,
    or pulled now."""
    out.mkdir(parents=True, exist_ok=True)
    pulled = []
    for event, seconds in packed:
        final = out / event.archive
        if seconds is not None:
            pulled.append(Pulled(final, entry_of(event), 0, seconds, streamed=True))
            continue
        if (final.is_file() and final.stat().st_size == event.size
                and sha256_file(final) == event.sha256):
            progress(f"{event.archive} is already here with the right sha256: not pulled again")
            pulled.append(Pulled(final, entry_of(event), event.size, 0.0, already_here=True))
            continue
        part = Part(out, event.archive, event.size, event.sha256)
        ensure_space(out, event.size - part.held(), event.archive)
        received.add(event.archive)
        assert link.stream.pace is not None
        link.stream.pace.restart()  # the time of our own hashing above is not the host's
        if link.puller is not None:
            result = link.puller(event, out, bar)
        else:
            result = pull(stream_source(link.stream, event), event, out, bar)
        if result.resumed:
            progress(f"resumed {event.archive} from byte {result.resumed}")
        pulled.append(Pulled(final, entry_of(event), result.resumed, result.seconds))
    return pulled


def _wait_for_archives(link: AgentLink, asked: Asked, out: Path, progress: ProgressFn, bar: bool,
                       received: Received) -> list[tuple[ev.Packed, float | None]]:
    """Events up to ``ready``: each ``packed`` event, with the seconds it took when the host sent the
    archive while packing it (received on the way, never past the size the ``stream`` event
    announced, for which free space was checked before the first byte). A host that ends before
    saying hello is diagnosed from its exit."""
    stream, hello = link.stream, False
    packed: list[tuple[ev.Packed, float | None]] = []
    assert stream.pace is not None
    pace = stream.pace
    host = HostProgress(stream.where, progress, bar, Declared(pace, asked.repo_ids))
    live: LiveArchive | None = None
    try:
        while True:
            try:
                event = stream.read_event()
            except RemoteConnectError:
                if not hello and stream.closed_by_host:  # a host we gave up on is still there: no exit
                    diagnose_start(link)
                raise
            if isinstance(event, ev.Chunk):
                if live is None:
                    raise HostMisbehaved(f"{stream.where} sent archive bytes it had not announced")
                if live.size + event.length > live.bound:
                    raise HostMisbehaved(f"{stream.where} sent more of {live.final.name} than the "
                                         f"{live.bound} bytes it announced")
                live.add(stream.read_exact(event.length))
            elif isinstance(event, ev.HostError):
                raise agent_error(event, stream.where)
            elif isinstance(event, ev.Hello):
                if not hello:  # the host's start-up (a --bootstrap install) had its own stretch
                    pace.restart()
                hello = True
                progress(f"{stream.where}: huggingface_hub {clean(event.huggingface_hub)}, "
                         f"Python {clean(event.python)}")
            elif isinstance(event, ev.Download):
                host.update(event)
            elif isinstance(event, ev.Progress):
                progress(f"{stream.where}: {clean(event.message)}")
            elif isinstance(event, ev.StreamOpen):
                if live is not None or not link.live:
                    raise HostMisbehaved(f"{stream.where} announced a stream it may not send now")
                asked.streamable(event.archive)
                out.mkdir(parents=True, exist_ok=True)
                ensure_space(out, event.size, event.archive, kept="nothing was written")
                received.add(event.archive)
                live = LiveArchive(out, event.archive, event.size)
            elif isinstance(event, ev.StreamVoid):
                if live is not None:
                    progress(f"{stream.where}: packing again after the download ({clean(event.why)})")
                    live.discard()
                    live = None
            elif isinstance(event, ev.Packed):
                asked.answer(event)
                host.finish(event.repo_id)
                seconds = None
                if event.streamed:
                    if live is None or live.final.name != event.archive:
                        raise HostMisbehaved(f"{stream.where} said it had streamed {event.archive}, "
                                             "which it had not announced")
                    seconds, live = live.finish(event.size, event.sha256), None
                pace.restart()  # a revision was packed: the next one's download starts its own stretch
                progress(f"{stream.where}: packed {event.archive} ({human_size(event.size)}, "
                         f"sha256 {event.sha256[:16]}…)"
                         + (", received while packed" if seconds is not None else ""))
                packed.append((event, seconds))
            elif isinstance(event, ev.Ready):
                asked.complete()
                return packed
            else:
                raise HostMisbehaved(f"{stream.where} sent a {event.name} event before it was ready")
    finally:
        if live is not None:  # cut mid-stream: the part is a prefix of the archive; the next run resumes it
            live.close()  # (after a violation, run_agent removes it with the rest)


def diagnose_start(link: AgentLink) -> None:
    """The host closed the stream before the agent started: say why from how it ended (no such
    Python, a shell that prints, ...). `link.ended` hangs up first: a host still reading its stdin
    ends then, instead of at the bound of the wait for its exit."""
    status, stderr = link.ended()
    said = clean((stderr.strip().splitlines() or [""])[-1][:200])
    if status == 127 or "not found" in said or "No such file" in said:
        raise RemoteDownloadError(f"{link.stream.where} cannot run {link.python!r}: {said or 'not found'}",
                                  "choose another Python on the host: a Python 3 there (e.g. "
                                  "/usr/bin/python3)")
    if status is not None:
        raise RemoteDownloadError(f"{link.python} on {link.stream.where} exited with status {status} before "
                                  f"starting the agent{': ' + said if said else ''}",
                                  "choose another Python on the host (a Python 3.8+ with huggingface_hub), "
                                  "or install it into a temporary folder for this run")


def remote_path(stream: Stream, event: ev.Packed) -> str:
    """Where the host keeps an archive (for OpenSSH's pull): asked with ``path``."""
    stream.send_json({"cmd": "path", "archive": event.archive})
    answer = stream.read_event()
    if not isinstance(answer, ev.HostPath):
        raise HostMisbehaved(f"{stream.where} answered a path request with a {answer.name} event")
    return answer.path


def stream_source(stream: Stream, event: Announced) -> Source:
    """Bytes from the agent over its own channel (``send`` → ``data``): it restarts at 0 when our
    prefix is not its own; any other start or length is refused."""

    def fetch_from(offset: int, prefix_sha256: str) -> tuple[int, Iterator[bytes]]:
        stream.send_json({"cmd": "send", "archive": event.archive, "offset": offset,
                          "prefix_sha256": prefix_sha256})
        header = stream.read_event()
        if isinstance(header, ev.HostError):
            raise agent_error(header, stream.where)
        if not isinstance(header, ev.Data):
            raise HostMisbehaved(f"{stream.where} answered a send request with a {header.name} event")
        start, length = header.offset, header.length
        if start not in (0, offset) or start + length != event.size:
            raise HostMisbehaved(f"{stream.where} offered bytes {start}..{start + length} of "
                                 f"{event.archive}, which has {event.size}")
        return start, stream.read_exact(length)

    return fetch_from
