"""Rendering: results to stdout (text or one JSON object), progress and hints to stderr."""

from __future__ import annotations

import json
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


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """Print a command's result on stdout: the JSON object, or its human rendering."""
    if as_json:
        ok = result.get("ok", result.get("exit_code", 0) == 0)
        body = {"ok": ok, **{k: v for k, v in result.items() if k != "ok"}}
        sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")
    else:
        text = render(result)
        if text:
            sys.stdout.write(text.rstrip("\n") + "\n")


def fail(err: ProvisionError, as_json: bool) -> None:
    """Report an error: one line + hint on stderr; with --json also an object on stdout."""
    sys.stderr.write(f"error: {err.message}\n")
    if err.hint:
        sys.stderr.write(f"hint: {err.hint}\n")
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, **err.to_dict()}, indent=2) + "\n")


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
            sys.stderr.write(f"{msg}\n")
            sys.stderr.flush()
