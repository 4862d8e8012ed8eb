"""The local hub cache: where it is, what it holds, and its offline integrity check.

The names on disk follow `layout`; this module reads a real cache: refs, snapshots, the blobs
behind them (hashed against their names), copies where symlinks are unsupported, and the
``trees/<commit>.json`` listing of an incomplete download.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelMissingError, UsageError
from ..fsutil import open_regular
from ..integrity.hashing import blob_matches, blob_names
from .layout import (
    BLOB_RE,
    COMMIT_RE,
    SHORT_COMMIT_RE,
    FileRecord,
    is_repo_folder_name,
    repo_folder_name,
    repo_id_from_folder,
    repo_type_from_folder,
)

GIVEN = "the caller"  # a CacheLocation's source when the folder was given (the CLI's --cache-dir)


@dataclass(frozen=True)
class CacheLocation:
    """The resolved cache folder and what chose it."""

    path: Path
    source: str  # the environment variable that chose it, "default", or GIVEN (the caller's folder)
    note: str = ""  # said on stderr: how the given folder was read


def resolve_cache_dir(override: str | os.PathLike[str] | None = None) -> CacheLocation:
    """The hub cache folder exactly as huggingface_hub resolves it (its own constants decide)."""
    if override:
        path = Path(override).expanduser().absolute()
        if (path / "hub").is_dir() and not any(is_repo_folder_name(p.name) for p in path.iterdir()):
            return CacheLocation(path / "hub", GIVEN,
                                 f"note: {path} is a Hugging Face home (it holds hub/): using {path / 'hub'}")
        return CacheLocation(path, GIVEN)
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        if os.environ.get(var):
            source = var
            break
    else:
        source = "default"
    return CacheLocation(Path(constants.HF_HUB_CACHE).expanduser().absolute(), source)


def read_ref(repo_dir: Path, name: str = "main") -> str | None:
    """The commit a ref points to (stripped), or None when absent or malformed."""
    try:
        with open_regular(repo_dir / "refs" / name) as fh:
            text = fh.read(4096).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if COMMIT_RE.match(text) else None


def list_refs(repo_dir: Path) -> dict[str, str]:
    """All refs of a repo: name -> commit (malformed refs are skipped)."""
    refs_dir = repo_dir / "refs"
    out: dict[str, str] = {}
    if refs_dir.is_dir():
        for p in sorted(refs_dir.rglob("*")):
            if p.is_file():
                name = p.relative_to(refs_dir).as_posix()
                commit = read_ref(repo_dir, name)
                if commit:
                    out[name] = commit
    return out


def resolve_commit(cache: Path, repo_id: str, revision: str | None, repo_type: str = "model") -> str:
    """Turn a revision (None = main, a ref name, a commit or its first 7+ hex digits) into a cached
    40-hex commit. With no revision and no refs/main (a pinned fetch), a single snapshot is it."""
    repo_dir = cache / repo_folder_name(repo_id, repo_type)
    if not repo_dir.is_dir():
        raise ModelMissingError(f"{repo_id} is not in the cache {cache}",
                                "get it with `provision fetch` or `provision restore`",
                                path=repo_dir, repo=repo_id, revision=revision)
    rev = revision or "main"
    commit = rev if COMMIT_RE.match(rev) else read_ref(repo_dir, rev)
    snaps = repo_dir / "snapshots"
    if commit is None and revision is None and snaps.is_dir():
        pinned = [p.name for p in snaps.iterdir() if COMMIT_RE.match(p.name)]
        commit = pinned[0] if len(pinned) == 1 else None
    if commit is None and SHORT_COMMIT_RE.match(rev):  # the 12-hex form this tool prints
        found = sorted(p.name for p in snaps.iterdir() if p.name.startswith(rev)) if snaps.is_dir() else []
        if len(found) > 1:
            raise UsageError(f"{repo_id}@{rev} is ambiguous: {', '.join(f[:12] for f in found)}",
                             "give more characters of the commit")
        commit = found[0] if found else None
    if not commit or not (repo_dir / "snapshots" / commit).is_dir():
        raise ModelMissingError(f"{repo_id}@{rev} has no snapshot in the cache {cache}",
                                "list what is cached with `provision status`",
                                path=repo_dir, repo=repo_id, revision=rev)
    return commit


@dataclass(frozen=True)
class RevisionState:
    """What the cache holds for one commit of one repo, and what is wrong with it."""

    repo_id: str
    commit: str
    refs: tuple[str, ...]
    files: tuple[FileRecord, ...]
    problems: tuple[str, ...] = field(default=())
    hashed: bool = True
    repo_type: str = "model"

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, object]:
        return {"repo_id": self.repo_id, "repo_type": self.repo_type, "commit": self.commit,
                "refs": list(self.refs),
                "files": len(self.files), "size": self.size,
                "integrity": ("ok" if self.ok else "bad") if self.hashed else "unchecked",
                "problems": list(self.problems)}


def check_revision(cache: Path, repo_id: str, commit: str, hash_blobs: bool = True,
                   repo_type: str = "model") -> RevisionState:
    """Check one cached revision offline: links, blobs (hashed), refs and the trees listing."""
    repo_dir = cache / repo_folder_name(repo_id, repo_type)
    snap = repo_dir / "snapshots" / commit
    blobs_dir = (repo_dir / "blobs").resolve()
    problems: list[str] = []
    files: list[FileRecord] = []
    hashed_ok: dict[str, bool] = {}
    if snap.is_symlink():  # its links would be read through another folder than the one hashed here
        problems.append(f"snapshots/{commit} is a link ({os.readlink(snap)}), not a folder")
    for entry in sorted(snap.rglob("*")):
        rel = entry.relative_to(snap).as_posix()
        if entry.is_dir() and not entry.is_symlink():
            continue
        if not entry.is_symlink() and not entry.is_file():  # never opened: it could block a scan
            problems.append(f"{rel}: not a regular file (a FIFO, socket or device)")
            continue
        if not entry.is_symlink():  # a cache on a filesystem without symlinks holds copies
            copied = _copied_blob(entry, repo_dir / "blobs")
            if copied is None:
                problems.append(f"{rel}: a plain file whose bytes match no blob of this repo")
            else:
                files.append(FileRecord(rel, copied, entry.stat().st_size))
            continue
        target = Path(os.path.normpath(entry.parent / os.readlink(entry)))
        if target.parent != repo_dir / "blobs" or not BLOB_RE.match(target.name):
            problems.append(f"{rel}: links outside this repo's blobs ({os.readlink(entry)})")
            continue
        blob_file = target.resolve()
        cache_real = cache.resolve()
        if not blob_file.is_file() or not (blob_file.is_relative_to(blobs_dir)
                                           or blob_file.is_relative_to(cache_real / "blobs")):
            problems.append(f"{rel}: blob {target.name} is missing")
            continue
        files.append(FileRecord(rel, target.name, blob_file.stat().st_size))
        if hash_blobs and target.name not in hashed_ok:
            try:
                hashed_ok[target.name] = blob_matches(blob_file, target.name)
            except OSError:  # gone, or no longer a regular file, since it was listed
                hashed_ok[target.name] = False
        if not hashed_ok.get(target.name, True):
            problems.append(f"{rel}: blob {target.name} does not match its hash")
    problems.extend(_missing_from_tree(repo_dir, commit, {f.path for f in files}))
    refs = tuple(sorted(n for n, c in list_refs(repo_dir).items() if c == commit))
    return RevisionState(repo_id, commit, refs, tuple(files), tuple(problems), hash_blobs, repo_type)


def _copied_blob(path: Path, blobs_dir: Path) -> str | None:
    """The blob a copied snapshot file stands for: its sha256 or git sha1, if such a blob exists."""
    try:
        names = blob_names(path)
    except OSError:  # gone, or no longer a regular file, since it was listed
        return None
    return next((name for name in names if (blobs_dir / name).is_file()), None)


def _missing_from_tree(repo_dir: Path, commit: str, present: set[str]) -> list[str]:
    """Files that ``trees/<commit>.json`` lists but the snapshot lacks."""
    tree = repo_dir / "trees" / f"{commit}.json"
    if not tree.is_file():
        return []
    try:
        listing = json.loads(tree.read_text())
    except (ValueError, UnicodeDecodeError):
        return [f"trees/{commit}.json is not valid JSON"]
    files = listing.get("files") if isinstance(listing, dict) else None
    if not isinstance(files, dict):
        return [f"trees/{commit}.json has no file listing"]
    return [f"{p}: listed in trees/{commit}.json but missing (incomplete download)"
            for p in sorted(set(files) - present)]


def scan_cache(cache: Path, hash_blobs: bool = True) -> list[RevisionState]:
    """Every revision of every model and dataset repo in the cache, checked."""
    out: list[RevisionState] = []
    if not cache.is_dir():
        return out
    for repo_dir in sorted(cache.iterdir()):
        repo_id = repo_id_from_folder(repo_dir.name)
        snaps = repo_dir / "snapshots"
        if not repo_id or not snaps.is_dir():
            continue
        for snap in sorted(snaps.iterdir()):
            if COMMIT_RE.match(snap.name):
                out.append(check_revision(cache, repo_id, snap.name, hash_blobs,
                                          repo_type_from_folder(repo_dir.name)))
    return out
