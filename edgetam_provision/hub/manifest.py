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
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import IntegrityError
from ..fsutil import write_atomic
from .layout import BLOB_RE, FOLDER_PREFIXES, FileRecord

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FORMAT = "edgetam-provision/2"  # 2: adds the optional per-archive "hub" (HubCheck)
FORMATS = ("edgetam-provision/1", FORMAT)  # what this version reads
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)\Z")


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
        return (f"checked against the Hub's listing ({self.files} file{'s' if self.files != 1 else ''})"
                if self.checked else f"not checked against the Hub: {self.skipped}; {word}")

    def to_dict(self) -> dict[str, object]:
        return {"checked": self.checked, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> HubCheck:
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
    def from_dict(cls, name: str, d: dict) -> ArchiveEntry:
        return cls(archive=name, repo_id=d["repo_id"], commit=d["commit"],
                   refs=tuple(d.get("refs", ())),
                   files=tuple(FileRecord.from_dict(f) for f in d["files"]),
                   sha256=d["sha256"], size=int(d["size"]), compression=d.get("compression", "none"),
                   tool_version=d.get("tool_version", ""), created=d.get("created", ""),
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
            if not (SHA256_RE.match(e.sha256) and all(BLOB_RE.match(f.blob) for f in e.files)):
                raise ValueError(f"{e.archive}: a hash is not hex")
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
        if m:
            out[m.group(2)] = m.group(1)
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
