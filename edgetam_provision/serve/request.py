"""What a request asks, read from its parts without ever failing: the path's segments, the query
string's fields, the Range header. Anything malformed is None (a 400 or the whole file), never an
exception: these are the only places request bytes are parsed."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

MAX_URL = 4096  # bytes of a path, and of a query string
MAX_FIELDS = 32  # fields of a query string
BEYOND_ANY_SIZE = 10**20  # a Range number with more digits than this is read as this (> 2**64)


def segments(raw_path: str) -> list[str] | None:
    """The URL path split into segments, each percent-decoded once (UTF-8); None when it is too
    long, not absolute, or not UTF-8 once decoded. Which names exist is for the index to say."""
    if len(raw_path) > MAX_URL or not raw_path.startswith("/"):
        return None
    try:
        return [unquote(p, errors="strict") for p in raw_path[1:].split("/")]
    except UnicodeDecodeError:
        return None


def query(raw: bytes) -> dict[str, str] | None:
    """The query string's fields (the last of a repeated name wins); None when it is malformed."""
    if len(raw) > MAX_URL:
        return None
    try:
        return dict(parse_qsl(raw.decode("ascii"), keep_blank_values=True, max_num_fields=MAX_FIELDS,
                              errors="strict"))
    except (UnicodeDecodeError, ValueError):
        return None


def flag(value: str | None) -> bool:
    """A query flag as huggingface_hub sends it (``recursive=True``, ``=true``, ``=1``)."""
    return (value or "").lower() in ("true", "1", "yes")


def _number(digits: str) -> int | None:
    """A Range number of any length (ASCII digits only): a value past any file's size for one too
    long to matter, so that int's digit limit is never reached."""
    if not (digits.isascii() and digits.isdigit()):
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else BEYOND_ANY_SIZE


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end) to send, end exclusive, per RFC 9110 §14: one ``bytes=`` range; the whole file
    without one, for another unit, several ranges or bad syntax (a server may ignore Range);
    None (416) when the range cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return 0, size
    first, dash, last = spec.strip().partition("-")
    start, end = _number(first), _number(last)
    if not dash or (first and start is None) or (last and end is None) or not (first or last):
        return 0, size
    if start is None:  # a suffix: the last N bytes (N = 0 cannot be satisfied)
        n = end or 0
        return (max(0, size - n), size) if n > 0 and size > 0 else None
    if end is not None and end < start:
        return 0, size  # invalid: ignored
    if start >= size:
        return None
    return start, min(size, end + 1) if end is not None else size
