"""`provision status`: what the backups folder and the cache hold, and whether it is intact."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archive.compression import ARCHIVE_SUFFIXES
from .hub.cache import RevisionState, scan_cache
from .hub.manifest import ArchiveEntry, read_manifest
from .repos import BACKBONE_REPO, EDGETAM_REPO


@dataclass(frozen=True)
class BackupFile:
    """One archive of the backups folder, beside what its manifest says of it (None: nothing)."""

    archive: str  # its file name
    size: int
    entry: ArchiveEntry | None

    @property
    def state(self) -> str:
        if self.entry is None:
            return "no manifest"
        return "size matches manifest" if self.entry.size == self.size else "size differs from manifest"

    def to_dict(self) -> dict[str, object]:
        e = self.entry
        return {"archive": self.archive, "size": self.size, "repo_id": e.repo_id if e else None,
                "commit": e.commit if e else None, "manifest": bool(e), "state": self.state}


@dataclass(frozen=True)
class CachedRevision:
    """One cached revision, integrity-checked, and whether it holds only a filtered fetch's files."""

    state: RevisionState
    partial: bool

    @property
    def integrity(self) -> str:
        return ("ok" if self.state.ok else "bad") if self.state.hashed else "unchecked"

    def to_dict(self) -> dict[str, object]:
        return {**self.state.to_dict(), "partial": self.partial}


@dataclass(frozen=True)
class CacheReport:
    """Every cached revision, and whether EdgeTAM (with its backbone config) can be verified."""

    cache: Path
    revisions: tuple[CachedRevision, ...]

    def _have(self) -> set[str]:
        return {r.state.repo_id for r in self.revisions if r.integrity != "bad" and not r.partial}

    @property
    def edgetam_ready(self) -> bool:
        return EDGETAM_REPO in self._have()

    @property
    def backbone_config_present(self) -> bool:
        return BACKBONE_REPO in self._have()

    def to_dict(self) -> dict[str, object]:
        return {"cache": str(self.cache), "revisions": [r.to_dict() for r in self.revisions],
                "edgetam_ready": self.edgetam_ready, "backbone_config_present": self.backbone_config_present}


@dataclass(frozen=True)
class StatusReport:
    """`provision status`: the backups folder, the cache, and the mirror running on it (the JSON
    of its state file, as the mirror wrote it). Its verdict: 1 when a cached revision is damaged."""

    backups_folder: Path
    backups_folder_found: bool
    backups: tuple[BackupFile, ...]
    cache: CacheReport
    mirror: Mapping[str, Any] | None

    @property
    def damaged(self) -> bool:
        return any(r.integrity == "bad" for r in self.cache.revisions)

    @property
    def exit_code(self) -> int:
        """The exit-code table's code of what it found: IntegrityError's (1) when a revision is damaged."""
        from .errors import IntegrityError

        return IntegrityError.exit_code if self.damaged else 0

    def to_dict(self) -> dict[str, Any]:
        """The object of ``status --json``; its ``exit_code``, when not 0, is `exit_code`'s."""
        data: dict[str, Any] = {"backups_folder": str(self.backups_folder),
                                "backups_folder_found": self.backups_folder_found,
                                "backups": [b.to_dict() for b in self.backups],
                                **self.cache.to_dict(), "mirror": self.mirror}
        if self.exit_code:
            data["exit_code"] = self.exit_code
        return data


def backups_status(folder: Path) -> tuple[BackupFile, ...]:
    """Every archive in `folder`, with what its manifest says (or that it has none)."""
    if not folder.is_dir():
        return ()
    manifest = read_manifest(folder)
    return tuple(BackupFile(p.name, p.stat().st_size, manifest.get(p.name)) for p in sorted(folder.iterdir())
                 if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES))


FILTERED_RE = re.compile(r"\.only-[0-9a-f]{8}\.")  # layout.archive_name of a filtered download


def filtered_only(revision: RevisionState, manifest: dict[str, ArchiveEntry]) -> bool:
    """Whether what the cache holds of a revision came from filtered fetches (--include/--exclude)
    alone: the backups hold no whole archive of it, and the cached files are among the filtered
    ones. Such a revision is part of what the Hub lists; a model in it may not load."""
    mine = [(n, e) for n, e in manifest.items()
            if (e.repo_id, e.commit, e.repo_type) == (revision.repo_id, revision.commit, revision.repo_type)]
    if not mine or any(not FILTERED_RE.search(n) for n, _e in mine):
        return False
    return len(revision.files) <= len({f.path for _n, e in mine for f in e.files})


def cache_status(cache: Path, hash_blobs: bool = True, backups: Path | None = None) -> CacheReport:
    """Every cached revision, integrity-checked, plus whether EdgeTAM is ready to verify."""
    manifest = read_manifest(backups) if backups is not None and backups.is_dir() else {}
    return CacheReport(cache, tuple(CachedRevision(r, filtered_only(r, manifest))
                                    for r in scan_cache(cache, hash_blobs)))


def status(cache: Path, backups: Path, hash_blobs: bool = True) -> StatusReport:
    """`provision status`: backups and cache; its verdict is 1 when a cached revision is damaged."""
    from .serve.run import running_mirror

    return StatusReport(backups, backups.is_dir(), backups_status(backups),
                        cache_status(cache, hash_blobs, backups), running_mirror(cache))
