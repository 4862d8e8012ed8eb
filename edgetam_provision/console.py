"""Rendering: results to stdout (text or one JSON object), progress and hints to stderr."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

from .errors import ProvisionError


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def counted(n: int, word: str, plural: str = "") -> str:
    """`1 new blob`, `2 new blobs`, `0 entries`: the plural unless there is exactly one."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """Text made safe for a terminal: control characters (ESC, CR, BEL, C1, bidi) become '?'."""
    return CONTROL.sub("?", text)


def _write(stream: Any, text: str) -> None:
    """Write text a terminal can show whatever it holds: no control characters, and what the
    stream's encoding cannot carry (a non-UTF-8 name, on a strict terminal) as escapes."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    stream.write(clean(text).encode(encoding, "backslashreplace").decode(encoding, "replace"))


def emit(result: dict[str, Any], as_json: bool, words: Callable[[], str], ok: bool) -> None:
    """Print a command's result on stdout: the JSON object (its ``ok`` first: the result's own, else
    `ok`, its verdict), or its words."""
    if as_json:
        body = {"ok": result.get("ok", ok), **{k: v for k, v in result.items() if k != "ok"}}
        sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")
    else:
        text = words()
        if text:
            _write(sys.stdout, text.rstrip("\n") + "\n")


def end_bars() -> None:
    """Close every progress bar still open (a command cut by Ctrl-C or an error), so that its line
    ends before the error is written: a bar left to be collected later is drawn again after it."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def fail(err: ProvisionError, as_json: bool) -> None:
    """Report an error: one line + hint on stderr; with --json also an object on stdout."""
    end_bars()
    _write(sys.stderr, f"error: {err.message}\n")
    if err.hint:
        _write(sys.stderr, f"hint: {err.hint}\n")
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, **err.to_dict()}, indent=2, default=str) + "\n")


#: the one progress type of the library: a function taking one line of progress
ProgressFn = Callable[[str], None]


def no_progress(_line: str) -> None:
    """The library's default: say nothing."""


class StderrProgress:
    """The CLI's `ProgressFn`: lines on stderr, or nothing when `quiet` (--json)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            _write(sys.stderr, f"{msg}\n")
            sys.stderr.flush()
