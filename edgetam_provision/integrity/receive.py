"""The resumable hashed part: an archive's bytes arrive in ``NAME.part`` and become ``NAME`` only
when their sha256 is the one the host announced.

One definition for the three byte paths (the agent's channel, OpenSSH's ranges, the live stream):

- what a part proves: written in order (channel, live stream), its bytes are a prefix of the
  archive once the host confirms their sha256 (`Part.prefix`); written by ranges, the ranges its
  ledger ``NAME.part.ranges`` lists, when the ledger names this very archive (`Part.ranges_done`);
- what is written: hashed as it is written (`Writer`), or hashed whole at the end (ranges);
- when it becomes the archive: its size and sha256 equal the host's, then one ``os.replace``
  (`Part.settle`); otherwise the part and its ledger are removed.

The files on disk keep their form from earlier versions (raw bytes; the ledger's JSON keys
``sha256``, ``size``, ``ranges``, ``done``), so a part cut by one version resumes in the next.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..fsutil import disk_error, write_atomic
from .hashing import BlobHasher, hash_file, sha256_file

PART = ".part"
LEDGER = ".part.ranges"

Range = list[int]  # [start, end): a list, as JSON reads it back


def part_files(out: Path, name: str) -> tuple[Path, Path, Path]:
    """The archive `name` in `out`, its part, and the part's range ledger."""
    return out / name, out / f"{name}{PART}", out / f"{name}{LEDGER}"


class Writer:
    """The part open for writing from `start` (anything after it dropped), every byte hashed into
    `h` as it is written; `size` is where the part ends. A failed write is a `CacheError`."""

    def __init__(self, path: Path, start: int, h: BlobHasher) -> None:
        self.path, self.h, self.size = path, h, start
        try:
            self.fh = open(path, "r+b" if start else "wb")  # noqa: SIM115 - closed in close()
            self.fh.seek(start)
            self.fh.truncate()
        except OSError as exc:
            raise disk_error(exc, path) from None

    def write(self, chunk: bytes) -> None:
        try:
            self.fh.write(chunk)
        except OSError as exc:
            raise disk_error(exc, self.path) from None
        self.h.update(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError as exc:
            raise disk_error(exc, self.path) from None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Part:
    """``out/NAME.part``: the bytes received so far of the archive NAME of `size` bytes whose
    sha256 the host announced as `sha256`."""

    def __init__(self, out: Path, name: str, size: int, sha256: str) -> None:
        self.name, self.size, self.sha256 = name, size, sha256
        self.final, self.path, self.ledger = part_files(out, name)

    def held(self) -> int:
        """Bytes the part holds now (0 when there is none)."""
        try:
            return self.path.stat().st_size if self.path.is_file() else 0
        except OSError:
            return 0

    def in_order(self) -> bool:
        """Whether a part is here that was written in order (no range ledger): a prefix to resume."""
        return self.path.is_file() and not self.ledger.exists()

    def prefix(self) -> tuple[int, BlobHasher]:
        """Where a part written in order resumes, and the sha256 of its bytes so far (the host
        compares it with its own first bytes before sending the rest). A part longer than the
        archive, or unreadable, proves nothing: it is removed and the receive starts at 0."""
        h = hashlib.sha256()
        if not self.path.is_file():
            return 0, h
        try:
            held = hash_file(self.path, h)
        except OSError:
            held = self.size + 1
        if held > self.size:
            self.discard()
            return 0, hashlib.sha256()
        return held, h

    def writer(self, start: int, h: BlobHasher) -> Writer:
        """The part open for writing from `start`, hashing into `h` (which holds the bytes before)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return Writer(self.path, start, h)

    def ranges_done(self, ranges: list[Range]) -> list[Range]:
        """The ranges a cut ranged receive finished, when its ledger names this very archive (its
        sha256, size and cut); otherwise the part proves nothing and is removed."""
        try:
            data = json.loads(self.ledger.read_text())
        except (OSError, ValueError):
            data = {}
        key = self._ledger_key(ranges)
        if (not isinstance(data, dict) or not self.path.is_file()
                or any(data.get(k) != v for k, v in key.items())):
            self.path.unlink(missing_ok=True)
            return []
        done = data.get("done", [])
        return [r for r in done if isinstance(r, list) and r in ranges] if isinstance(done, list) else []

    def record_ranges(self, ranges: list[Range], done: list[Range]) -> None:
        """Remember, beside the part, that the ranges `done` of the cut `ranges` are written."""
        write_atomic(self.ledger, json.dumps({**self._ledger_key(ranges), "done": done}))

    def open_in_place(self) -> int:
        """A descriptor on the part at its full size, for ranges written at their places."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, as every new file
        except OSError as exc:
            raise disk_error(exc, self.path) from None
        try:
            os.ftruncate(fd, self.size)
        except OSError as exc:
            os.close(fd)
            raise disk_error(exc, self.path) from None
        return fd

    def settle(self, sha256: str | None = None, size: int | None = None) -> bool:
        """The part becomes the archive when it is the host's: `size` bytes (when given) whose
        sha256 (`sha256`, or the part hashed whole now) is the announced one; one `os.replace`.
        Otherwise the part and its ledger are removed. True when kept."""
        try:
            ok = (size is None or size == self.size) and (sha256 or sha256_file(self.path)) == self.sha256
        except OSError:
            ok = False
        if ok:
            self.ledger.unlink(missing_ok=True)
            os.replace(self.path, self.final)
        else:
            self.discard()
        return ok

    def discard(self) -> None:
        """Remove the part and its ledger."""
        for path in (self.path, self.ledger):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _ledger_key(self, ranges: list[Range]) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "ranges": ranges}
