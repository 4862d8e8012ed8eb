"""`provision status`: what the backups folder and the cache hold, and whether it is intact."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .archive.compression import ARCHIVE_SUFFIXES
from .hub.cache import RevisionState, scan_cache
from .hub.manifest import ArchiveEntry, read_manifest
from .repos import BACKBONE_REPO, EDGETAM_REPO


def backups_status(folder: Path) -> list[dict[str, Any]]:
    """Every archive in `folder`, with what its manifest says (or that it has none)."""
    if not folder.is_dir():
        return []
    manifest = read_manifest(folder)
    out = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or not p.name.endswith(ARCHIVE_SUFFIXES):
            continue
        e = manifest.get(p.name)
        out.append({"archive": p.name, "size": p.stat().st_size,
                    "repo_id": e.repo_id if e else None, "commit": e.commit if e else None,
                    "manifest": bool(e),
                    "state": ("size matches manifest" if e and e.size == p.stat().st_size else
                              "size differs from manifest" if e else "no manifest")})
    return out


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


def cache_status(cache: Path, hash_blobs: bool = True, backups: Path | None = None) -> dict[str, Any]:
    """Every cached revision, integrity-checked, plus whether EdgeTAM is ready to verify."""
    states = scan_cache(cache, hash_blobs)
    manifest = read_manifest(backups) if backups is not None and backups.is_dir() else {}
    revisions = [{**r.to_dict(), "partial": filtered_only(r, manifest)} for r in states]
    have = {r["repo_id"] for r in revisions if r["integrity"] != "bad" and not r["partial"]}
    return {"cache": str(cache), "revisions": revisions,
            "edgetam_ready": EDGETAM_REPO in have, "backbone_config_present": BACKBONE_REPO in have}


def status(cache: Path, backups: Path, hash_blobs: bool = True) -> dict[str, Any]:
    """`provision status`: backups and cache; exit code 1 when a cached revision is damaged."""
    from .serve.run import running_mirror

    data = {"backups_folder": str(backups), "backups_folder_found": backups.is_dir(),
            "backups": backups_status(backups),
            **cache_status(cache, hash_blobs, backups), "mirror": running_mirror(cache)}
    if any(r["integrity"] == "bad" for r in data["revisions"]):
        data["exit_code"] = 1
    return data
