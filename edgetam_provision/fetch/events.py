"""What the host says, typed: one frozen dataclass per event of the protocol table (`protocol.EVENTS`).

`protocol.Stream.read_event` builds them, and only from a line the table checked; their fields are the
table's (names, types, the optional ones with their defaults), held so by tests/test_fetch_protocol.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..hub.layout import FileRecord


@dataclass(frozen=True, kw_only=True)
class Event:
    """An event from the host; `name` is its ``event`` key on the wire."""

    name: ClassVar[str] = ""


@dataclass(frozen=True, kw_only=True)
class Hello(Event):
    name: ClassVar[str] = "hello"
    huggingface_hub: str
    python: str


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    name: ClassVar[str] = "progress"
    message: str


@dataclass(frozen=True, kw_only=True)
class Download(Event):
    name: ClassVar[str] = "download"
    repo_id: str
    bytes: int
    total: int | None = None


@dataclass(frozen=True, kw_only=True)
class StreamOpen(Event):
    """``stream``: an archive will come as chunks while it is packed, at most `size` bytes."""

    name: ClassVar[str] = "stream"
    archive: str
    size: int


@dataclass(frozen=True, kw_only=True)
class Chunk(Event):
    name: ClassVar[str] = "chunk"
    length: int


@dataclass(frozen=True, kw_only=True)
class StreamVoid(Event):
    name: ClassVar[str] = "stream-void"
    why: str


@dataclass(frozen=True, kw_only=True)
class Packed(Event):
    """One archive is complete on the host: what it holds, its sha256 and size."""

    name: ClassVar[str] = "packed"
    archive: str
    repo_id: str
    repo_type: str = "model"
    commit: str
    refs: tuple[str, ...] = ()
    files: tuple[FileRecord, ...]
    sha256: str
    size: int
    streamed: bool = False


@dataclass(frozen=True, kw_only=True)
class Ready(Event):
    name: ClassVar[str] = "ready"


@dataclass(frozen=True, kw_only=True)
class Data(Event):
    name: ClassVar[str] = "data"
    offset: int
    length: int


@dataclass(frozen=True, kw_only=True)
class HostPath(Event):
    """``path``: where the archive lies on the host."""

    name: ClassVar[str] = "path"
    path: str


@dataclass(frozen=True, kw_only=True)
class Bye(Event):
    name: ClassVar[str] = "bye"


@dataclass(frozen=True, kw_only=True)
class HostError(Event):
    """``error``: the host failed (its last event)."""

    name: ClassVar[str] = "error"
    kind: str
    message: str
    log: str = ""


#: The event classes by their wire name (the keys of `protocol.EVENTS`).
EVENT_TYPES: dict[str, type[Event]] = {cls.name: cls for cls in (
    Hello, Progress, Download, StreamOpen, Chunk, StreamVoid, Packed, Ready, Data, HostPath, Bye, HostError)}
