"""The agent's two ends of the SSH channel: events out on stdout (from any thread), commands in on
stdin (read by a watcher thread, so that a closed stdin, the client gone, is noticed at once), and
an archive's bytes sent from an offset."""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from pathlib import Path
from typing import Any, BinaryIO

SEND_CHUNK = 8 * 1024 * 1024  # read and sent in pieces this big (the client's fsutil.CHUNK)
PROGRESS_EVERY_S = 1.0  # a download event this often: life to the client's deadline


class AgentError(Exception):
    """A failure the agent says as its last ``error`` event: `kind` (the client's hint) and message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Channel:
    """stdout events (from any thread) and stdin commands (read by a watcher thread, so that a
    closed stdin — the client is gone — is noticed at once, even in the middle of a download)."""

    def __init__(self, inp: BinaryIO, out: BinaryIO, on_gone: Any) -> None:
        self.out, self.lock = out, threading.Lock()
        self.commands: queue.Queue[bytes] = queue.Queue()
        self.on_gone = on_gone
        threading.Thread(target=self._watch, args=(inp,), daemon=True).start()

    def _watch(self, inp: BinaryIO) -> None:
        finishing = False  # after "done" the client may close at once: let the main thread finish
        while line := inp.readline():
            finishing = finishing or b'"done"' in line  # the main thread parses (and refuses junk)
            self.commands.put(line)
        if not finishing:
            self.on_gone()

    def emit(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json.dumps(event).encode() + b"\n")
            self.out.flush()

    def emit_data(self, data: bytes) -> None:
        """One ``chunk`` of an archive sent while it is packed: a header line, then the bytes."""
        with self.lock:
            self.out.write(json.dumps({"event": "chunk", "length": len(data)}).encode() + b"\n")
            self.out.write(data)
            self.out.flush()

    def command(self) -> dict[str, Any]:
        cmd: dict[str, Any] = json.loads(self.commands.get())  # the client's JSON: read as the agent uses it
        return cmd



def send(path: Path, offset: int, prefix_sha256: str | None, chan: Channel) -> None:
    """Stream `path` from `offset`, or from 0 when the client's prefix is not ours."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if offset:
            h = hashlib.sha256()
            left = offset if offset <= size else 0
            while left:
                chunk = fh.read(min(SEND_CHUNK, left))
                h.update(chunk)
                left -= len(chunk)
            if offset > size or h.hexdigest() != prefix_sha256:
                offset = 0
        fh.seek(offset)
        with chan.lock:
            chan.out.write(json.dumps({"event": "data", "offset": offset, "length": size - offset}).encode()
                           + b"\n")
            while chunk := fh.read(SEND_CHUNK):
                chan.out.write(chunk)
            chan.out.flush()



def emit_raw(out: BinaryIO, event: dict[str, Any]) -> None:
    """An event after the channel is done with (or before it exists): the last thing we say."""
    out.write(json.dumps(event).encode() + b"\n")
    out.flush()

