"""`provision backup`: pack cached repo revisions into verified archives plus a manifest."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .archive.compression import SUFFIX, compressor
from .archive.pack import pack_repo
from .errors import IntegrityError
from .fsutil import atomic_writer, disk_error
from .hub.cache import DEFAULT_REPOS, RepoSpec, check_revision, resolve_commit
from .hub.layout import archive_name, repo_folder_name
from .hub.manifest import ArchiveEntry, read_manifest, record


@dataclass(frozen=True)
class BackupResult:
    archive: Path
    entry: ArchiveEntry
    reused: bool

    def to_dict(self) -> dict[str, object]:
        return {"archive": str(self.archive), "repo_id": self.entry.repo_id,
                "commit": self.entry.commit, "size": self.entry.size,
                "sha256": self.entry.sha256, "files": len(self.entry.files),
                "status": "already backed up" if self.reused else "written"}


def backup(cache: Path, specs: list[RepoSpec] | None, out: Path,
           compression: str = "none") -> list[BackupResult]:
    """Back up each spec's revision (default: the EdgeTAM repos) into `out`.

    Every revision is integrity-checked first; a failing one stops the run before anything
    is written. Archives already recorded with the same commit are kept, not rewritten.
    """
    specs = specs or [RepoSpec(r) for r in DEFAULT_REPOS]
    compress = compressor(compression)
    states = []
    for spec in specs:
        commit = resolve_commit(cache, spec.repo_id, spec.revision, spec.repo_type)
        state = check_revision(cache, spec.repo_id, commit, repo_type=spec.repo_type)
        if not state.ok:
            raise IntegrityError(f"{spec.repo_id}@{commit[:12]} failed its integrity check: "
                                 f"{state.problems[0]}",
                                 "re-download it (`provision fetch`) instead of backing up bad bytes")
        states.append(state)
    out.mkdir(parents=True, exist_ok=True)
    known = read_manifest(out)
    results: list[BackupResult] = []
    for state in states:
        name = archive_name(state.repo_id, state.commit, SUFFIX[compression], state.repo_type)
        path = out / name
        prior = known.get(name)
        if prior and prior.commit == state.commit and path.is_file() \
                and path.stat().st_size == prior.size:
            results.append(BackupResult(path, prior, True))
            continue
        try:
            with atomic_writer(path) as fh:
                sha, size, files, refs = pack_repo(cache, repo_folder_name(state.repo_id, state.repo_type),
                                                   state.commit, fh, compress,
                                                   {f.path: f.blob for f in state.files})
        except OSError as exc:
            raise disk_error(exc, path) from None
        entry = ArchiveEntry(
            archive=name, repo_id=state.repo_id, repo_type=state.repo_type, commit=state.commit,
            refs=tuple(refs),
            files=tuple(files), sha256=sha,
            size=size, compression=compression, tool_version=__version__,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        results.append(BackupResult(path, entry, False))
    try:
        record(out, [r.entry for r in results])
    except OSError as exc:
        raise disk_error(exc, out / "manifest.json") from None
    return results
