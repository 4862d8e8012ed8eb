"""The fetch agent's wire protocol as one table, and the one checked reader of what the host says.

The host is an untrusted peer: every line it sends is bounded in length, parsed as a JSON object,
and checked against `EVENTS` (a known event, every required field present and of its type and
range, names in our grammars) before any of it is used, and becomes its typed event (`events`).
A violation is a `HostMisbehaved` error naming it. `docs/fetch-protocol.md` is generated from these tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..console import clean
from ..errors import HostMisbehaved, RemoteConnectError
from ..hub.layout import BLOB_RE, COMMIT_RE, FOLDER_PATTERN, REF_NAME_RE, FileRecord, valid_repo_id
from .events import EVENT_TYPES, Event
from .pace import Pace

MAX_LINE = 8 * 1024 * 1024  # one event line (a ``packed`` event lists every file of a revision)
MAX_CHUNK = 16 * 1024 * 1024  # one ``chunk`` of an archive sent while packing (the agent sends 8 MiB)
MAX_FILES = 1_000_000  # files listed for one revision
MAX_SIZE = 1 << 50  # 1 PiB: no archive or file is larger
ARCHIVE_NAME_RE = re.compile(  # what archive_name() writes
    rf"^{FOLDER_PATTERN}--[0-9a-f]{{12}}(?:\.only-[0-9a-f]{{8}})?\.tar\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
REPO_PATH_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,1000}\Z")


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Kind:
    """A field's type: its name in the docs, the check of a value, the Python type of the event's
    attribute and how a checked value becomes it."""

    doc: str
    ok: Callable[[Any], bool]
    type: object = object
    make: Callable[[Any], Any] = _same


def _int(lo: int, hi: int) -> Kind:
    doc = f"int ≥ {lo}" if hi == MAX_SIZE else f"int {lo}..{hi}"
    return Kind(doc, lambda v: type(v) is int and lo <= v <= hi, int)


def _text(n: int) -> Kind:
    return Kind(f"str ≤ {n}", lambda v: isinstance(v, str) and len(v) <= n, str)


def _match(doc: str, rx: re.Pattern[str]) -> Kind:
    return Kind(doc, lambda v: isinstance(v, str) and bool(rx.match(v)), str)


def _file(v: Any) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("path"), str) and bool(REPO_PATH_RE.match(v["path"]))
            and ".." not in v["path"].split("/") and not v["path"].startswith("/")
            and isinstance(v.get("blob"), str) and bool(BLOB_RE.match(v["blob"]))
            and type(v.get("size")) is int and 0 <= v["size"] <= MAX_SIZE)


SIZE = _int(0, MAX_SIZE)
ARCHIVE = _match("archive name", ARCHIVE_NAME_RE)
REPO_ID = Kind("repo id", lambda v: isinstance(v, str) and valid_repo_id(v), str)
REPO_TYPE = Kind('"model" or "dataset"', lambda v: v in ("model", "dataset"), str)
COMMIT = _match("40-hex commit", COMMIT_RE)
SHA256 = _match("64-hex sha256", SHA256_RE)
BOOL = Kind("bool", lambda v: type(v) is bool, bool)
REFS = Kind("list of ref names", lambda v: isinstance(v, list) and len(v) <= 1000
            and all(isinstance(r, str) and bool(REF_NAME_RE.match(r)) for r in v), tuple[str, ...], tuple)
FILES = Kind("list of {path, blob, size}", lambda v: isinstance(v, list) and len(v) <= MAX_FILES
             and all(_file(f) for f in v), tuple[FileRecord, ...],
             lambda v: tuple(FileRecord.from_dict(f) for f in v))
OPT_SIZE = Kind(f"{SIZE.doc} or null", lambda v: v is None or SIZE.ok(v), int | None)


@dataclass(frozen=True)
class Message:
    """One message: its fields (name -> kind), the optional ones, what follows on the wire."""

    direction: str  # "host → client" or "client → host"
    fields: dict[str, Kind]
    optional: frozenset[str] = frozenset()
    then: str = ""  # what follows the line on the wire
    doc: str = ""


def _event(fields: dict[str, Kind], doc: str, optional: tuple[str, ...] = (), then: str = "") -> Message:
    return Message("host → client", fields, frozenset(optional), then, doc)


def _command(fields: dict[str, Kind], doc: str, optional: tuple[str, ...] = ()) -> Message:
    return Message("client → host", fields, frozenset(optional), "", doc)


#: Everything the host may send, one JSON object a line: ``{"event": NAME, ...fields}``.
EVENTS: dict[str, Message] = {
    "hello": _event({"huggingface_hub": _text(64), "python": _text(64)},
                    "first event: the host's library and Python versions"),
    "progress": _event({"message": _text(500)}, "a line for the user (control characters removed)"),
    "download": _event({"repo_id": REPO_ID, "bytes": SIZE, "total": OPT_SIZE},
                       "download progress, every second; counts as life", ("total",)),
    "stream": _event({"archive": ARCHIVE, "size": SIZE},
                     "an archive will be sent while it is packed, at most `size` bytes (the client "
                     "checks free space for all of it first; a byte past it is a violation)"),
    "chunk": _event({"length": _int(1, MAX_CHUNK)}, "the next piece of the announced archive",
                    then="`length` raw bytes of the archive"),
    "stream-void": _event({"why": _text(500)}, "drop what was sent: the download did not match the "
                          "listing; the archive is packed again and offered below"),
    "packed": _event({"archive": ARCHIVE, "repo_id": REPO_ID, "repo_type": REPO_TYPE, "commit": COMMIT,
                      "refs": REFS, "files": FILES, "sha256": SHA256, "size": SIZE, "streamed": BOOL},
                     "one archive is complete (`streamed`: its bytes were all sent as chunks)",
                     ("repo_type", "refs", "streamed")),
    "ready": _event({}, "every archive was packed; the host waits for commands"),
    "data": _event({"offset": SIZE, "length": SIZE}, "answer to `send`",
                   then="`length` raw bytes of the archive from `offset`"),
    "path": _event({"path": _match("absolute path", re.compile(r"^/[A-Za-z0-9_./@+-]{1,1000}\Z"))},
                   "answer to `path`: where the archive lies on the host"),
    "bye": _event({}, "answer to `done`: the host removed its work folders"),
    "error": _event({"kind": _text(64), "message": _text(2000), "log": _text(4000)},
                    "the host failed; its last event", ("log",)),
}

#: What the client sends. Before these: the agent program's length in ASCII digits and a newline,
#: then the program, then the parameters as one JSON line.
COMMANDS: dict[str, Message] = {
    "params": _command({"repos": Kind("list of {repo_id, revision, repo_type, include, exclude}", bool),
                        "endpoint": Kind("str or null", bool), "token": Kind("str or null", bool),
                        "bootstrap": BOOL, "fresh": BOOL, "stream": BOOL,
                        "have": Kind("list of archive names", bool)},
                       "first line after the zip (no `cmd` key)"),
    "send": _command({"archive": ARCHIVE, "offset": SIZE, "prefix_sha256": SHA256},
                     "send an archive from `offset`; the host restarts at 0 if its prefix differs"),
    "path": _command({"archive": ARCHIVE}, "where does the archive lie (for OpenSSH's pull)"),
    "done": _command({}, "every archive arrived: remove the work folders, then say bye"),
}


def check_event(obj: Any, where: str) -> Event:
    """`obj` as a valid event (its `events` class, of only its declared fields; an optional one
    absent or null takes its default), or `HostMisbehaved` naming what is wrong."""
    if not isinstance(obj, dict):
        raise HostMisbehaved(f"{where} sent a {type(obj).__name__} where an event object belongs")
    name = obj.get("event")
    if not isinstance(name, str) or name not in EVENTS:
        raise HostMisbehaved(f"{where} sent an unknown event {clean(repr(name))[:60]}")
    spec = EVENTS[name]
    fields: dict[str, Any] = {}
    for field, kind in spec.fields.items():
        if field not in obj or (obj[field] is None and field in spec.optional):
            if field not in spec.optional:
                raise HostMisbehaved(f"{where} sent a {name} event without {field!r}")
            continue
        if not kind.ok(obj[field]):
            raise HostMisbehaved(f"{where} sent a {name} event whose {field!r} is not a {kind.doc}")
        fields[field] = kind.make(obj[field])
    return EVENT_TYPES[name](**fields)


def parse_event(line: bytes, where: str) -> Event:
    """One line from the host (without its newline) as a checked event."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise HostMisbehaved(f"{where} sent something that is not a protocol line: "
                             f"{clean(line[:120].decode(errors='replace'))!r}",
                             "check the host's Python; the host's login shell may print text") from None
    return check_event(obj, where)


RECV = 16 * 1024 * 1024  # matches the SSH channel window: one recv can drain it


class Stream:
    """The agent's channel: checked event lines and exact runs of bytes over recv/send (an SSH
    channel, or a local pipe). `recv` raises TimeoutError past the read deadline."""

    def __init__(self, recv: Callable[[int], bytes], send: Callable[[bytes], Any], where: str,
                 broken: tuple[type[BaseException], ...] = ()) -> None:
        self._recv, self._send_raw, self.where = recv, send, where
        self._broken: tuple[type[BaseException], ...] = (OSError, EOFError, *broken)
        self._buf = b""
        self.pace: Pace | None = None  # checked at every receive; fed with the raw bytes read
        #: the host ended the channel (its end closed, or broken), not one of our deadlines: its exit says why
        self.closed_by_host = False

    def _lost(self, exc: BaseException) -> RemoteConnectError:
        self.closed_by_host = not isinstance(exc, TimeoutError)
        if isinstance(exc, TimeoutError):
            return RemoteConnectError(f"{self.where} went silent past the deadline",
                                      "the host or network stalled; run again (pulls resume), "
                                      "or raise the deadline")
        return RemoteConnectError(f"lost the connection to {self.where} ({exc})",
                                  "run the same command again: the pull resumes")

    def send(self, data: bytes) -> None:
        try:
            self._send_raw(data)
        except self._broken as exc:
            raise self._lost(exc) from None

    def _more(self, n: int = RECV) -> bytes:
        try:
            data = self._recv(n)
        except self._broken as exc:
            raise self._lost(exc) from None
        if not data:
            self.closed_by_host = True
            raise RemoteConnectError(f"{self.where} closed the connection",
                                     "run the same command again: the pull resumes")
        if self.pace is not None:  # a host that drips bytes is never silent: it runs out of time here
            self.pace.check()
        return data

    def send_json(self, obj: dict[str, Any]) -> None:
        self.send(json.dumps(obj).encode() + b"\n")

    def read_event(self) -> Event:
        """The next line, at most `MAX_LINE` bytes, as a checked, typed event (`parse_event`)."""
        scanned = 0
        while (end := self._buf.find(b"\n", scanned)) < 0:
            scanned = len(self._buf)
            if scanned > MAX_LINE:
                raise HostMisbehaved(f"{self.where} sent a line longer than {MAX_LINE} bytes")
            self._buf += self._more(65536)
        if end > MAX_LINE:
            raise HostMisbehaved(f"{self.where} sent a line longer than {MAX_LINE} bytes")
        line, self._buf = self._buf[:end], self._buf[end + 1:]
        return parse_event(line, self.where)

    def read_exact(self, n: int) -> Iterator[bytes]:
        """Exactly `n` raw bytes (what a ``chunk`` or ``data`` event announced), as they arrive."""
        while n:
            if not self._buf:
                self._buf = self._more(min(RECV, n))
            chunk, self._buf = self._buf[:n], self._buf[n:]
            n -= len(chunk)
            if self.pace is not None:
                self.pace.moved(len(chunk))
            yield chunk


def table_markdown(messages: dict[str, Message]) -> str:
    """The table for the docs (generated into docs/fetch-protocol.md)."""
    rows = ["| message | direction | fields (`?` optional) | then on the wire | meaning |",
            "|---|---|---|---|---|"]
    for name, m in messages.items():
        fields = ", ".join(f"`{f}{'?' if f in m.optional else ''}`: {k.doc}" for f, k in m.fields.items())
        rows.append(f"| `{name}` | {m.direction} | {fields or '—'} | {m.then or '—'} | {m.doc} |")
    return "\n".join(rows)
