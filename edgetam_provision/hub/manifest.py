"""``manifest.json`` and ``SHA256SUMS`` of a backups folder.

``manifest.json`` maps each archive's file name to what it holds (repo id, commit, refs, every
file with its size and blob hash, the archive's sha256 and size, tool version, time) and, from
format 2 on, whether it was checked against the Hub's own listing (`HubCheck`). Format 1 reads too.
``SHA256SUMS`` lists the same archives in the format ``sha256sum -c`` accepts. Both are rewritten
atomically, merging with entries already there.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..console import counted
from ..errors import IntegrityError
from ..fsutil import write_atomic
from .layout import BLOB_RE, COMMIT_RE, FOLDER_PREFIXES, REF_NAME_RE, FileRecord, valid_repo_id

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FORMAT = "edgetam-provision/2"  # 2: adds the optional per-archive "hub" (HubCheck)
FORMATS = ("edgetam-provision/1", FORMAT)  # what this version reads
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)\Z")
MAX_SIZE = 2**50  # bytes: a declared size past this (1 PiB) is no backup's


def _size(value: object, what: str) -> int:
    """A size as a manifest may declare it: a JSON integer from 0 to `MAX_SIZE` (not a bool,
    a float, ``1e999``, ``Infinity`` or ``NaN``)."""
    if type(value) is not int or not 0 <= value <= MAX_SIZE:
        raise ValueError(f"{what}: {str(value)[:40]} is not a size in bytes")
    return value


def _text(value: object, what: str, valid: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or (valid is not None and not valid.match(value)):
        raise ValueError(f"{what}: {str(value)[:60]!r} is not valid")
    return value


@dataclass(frozen=True)
class HubCheck:
    """Whether an archive was checked against the Hub's listing, asked from this machine: where,
    when, and how many files agreed; or why it was not (then the archive is the host's word)."""

    endpoint: str
    at: str  # UTC, ISO 8601
    files: int | None = None  # checked: the files the archive and the listing agree on
    skipped: str = ""  # not checked: why

    @property
    def checked(self) -> bool:
        return self.files is not None

    def describe(self, word: str = "the host's word") -> str:
        if self.files is None:
            return f"not checked against the Hub: {self.skipped}; {word}"
        return f"checked against the Hub's listing ({counted(self.files, 'file')})"

    def to_dict(self) -> dict[str, object]:
        return {"checked": self.checked, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HubCheck:
        files = d.get("files")
        if not (isinstance(d["endpoint"], str) and isinstance(d["at"], str)
                and isinstance(d.get("skipped", ""), str)
                and (files is None or (type(files) is int and files >= 0))):
            raise ValueError("a hub check that is not endpoint, at, files or skipped")
        return cls(d["endpoint"], d["at"], files, d.get("skipped", ""))


@dataclass(frozen=True)
class ArchiveEntry:
    """What the manifest says about one archive."""

    archive: str
    repo_id: str
    commit: str
    refs: tuple[str, ...]
    files: tuple[FileRecord, ...]
    sha256: str
    size: int
    compression: str
    tool_version: str
    created: str
    repo_type: str = "model"
    hub: HubCheck | None = None  # format 2

    def blob_sizes(self) -> dict[str, int]:
        return {f.blob: f.size for f in self.files}

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["refs"] = list(self.refs)
        d["files"] = [asdict(f) for f in self.files]
        d.pop("hub")
        if self.hub is not None:
            d["hub"] = self.hub.to_dict()
        return d

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> ArchiveEntry:
        """An entry as read from a manifest: every field of the type and grammar it must have."""
        repo_id = _text(d["repo_id"], "repo_id")
        if not valid_repo_id(repo_id):
            raise ValueError(f"repo_id {repo_id[:100]!r} is not valid")
        refs, files = d.get("refs", []), d["files"]
        if not isinstance(refs, list) or not isinstance(files, list):
            raise ValueError("refs and files must be lists")
        return cls(archive=name, repo_id=repo_id, commit=_text(d["commit"], "commit", COMMIT_RE),
                   refs=tuple(_text(r, "ref", REF_NAME_RE) for r in refs),
                   # a blob's name interned: the archive's scan then keeps this string, not a second
                   files=tuple(FileRecord(_text(f["path"], "path"),
                                          sys.intern(_text(f["blob"], "blob", BLOB_RE)),
                                          _size(f["size"], f"size of {f['path']}")) for f in files),
                   sha256=_text(d["sha256"], "sha256", SHA256_RE), size=_size(d["size"], "size"),
                   compression=str(d.get("compression", "none")),
                   tool_version=str(d.get("tool_version", "")), created=str(d.get("created", "")),
                   repo_type=str(d.get("repo_type", "model")),
                   hub=HubCheck.from_dict(d["hub"]) if d.get("hub") is not None else None)


def read_manifest(folder: Path) -> dict[str, ArchiveEntry]:
    """The manifest entries of a backups folder (empty when there is none)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        if data.get("format", FORMATS[0]) not in FORMATS:
            raise ValueError(f"format {str(data['format'])[:40]!r}, this version reads {', '.join(FORMATS)}")
        entries = {str(name): ArchiveEntry.from_dict(str(name), d) for name, d in data["archives"].items()}
        for e in entries.values():
            if e.repo_type not in FOLDER_PREFIXES:
                raise ValueError(f"{e.archive}: unknown repo type {e.repo_type!r}")
        return entries
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
        raise IntegrityError(f"{path} is not a valid manifest ({why[:200]})",
                             "restore the file from where the backups came from, or delete it "
                             "to rely on SHA256SUMS and the blob hashes alone") from None


def read_sums(folder: Path) -> dict[str, str]:
    """archive name -> sha256 from ``SHA256SUMS`` (empty when there is none)."""
    path = folder / SUMS
    if not path.is_file():
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(f"{path} is not a SHA256SUMS file (not UTF-8 text)",
                             "restore the file from where the backups came from, or delete it "
                             "to rely on the blob hashes alone") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = SUM_LINE.match(line.strip())
        if not m:
            continue
        digest, name = m.group(1), m.group(2).removeprefix("./")  # `sha256sum ./x.tar` writes ./x.tar
        if out.setdefault(name, digest) != digest:
            raise IntegrityError(f"{path} lists {name} twice, with two different sha256",
                                 "restore the file from where the backups came from, or delete it "
                                 "to rely on the blob hashes alone")
    return out


def record(folder: Path, entries: list[ArchiveEntry]) -> None:
    """Merge `entries` into the folder's manifest and SHA256SUMS, dropping vanished archives."""
    current = read_manifest(folder)
    current.update({e.archive: e for e in entries})
    current = {n: e for n, e in current.items() if (folder / n).is_file()}
    body = {"format": FORMAT,
            "archives": {n: {k: v for k, v in e.to_dict().items() if k != "archive"}
                         for n, e in sorted(current.items())}}
    write_atomic(folder / MANIFEST, json.dumps(body, indent=2) + "\n")
    write_atomic(folder / SUMS, "".join(f"{e.sha256}  {n}\n" for n, e in sorted(current.items())))
