"""What the mirror serves: each revision checked (every blob hashed), indexed, and checked again
when the disk under it changes.

A revision is served when `check_revision` finds nothing wrong and every file's name passes
`hub.layout.path_problem` (the one rule for names, which restore applies too): what is listed can
then be resolved, and nothing is listed that could not be. Each file is read from its blob by name
in the repo's ``blobs/``, never through the snapshot's links.

A revision not served (damaged) keeps the *fingerprint* of the disk it was judged on: the stat
identity of its snapshot's entries (links not followed, and their targets), of its blobs folder
and of its ``trees/`` listing, taken before the check. A request for it compares the fingerprint
(stats only, nothing opened or hashed); when it changed (a restore repaired it, say) the revision
is checked again, whole, once. So a repair is seen without a restart, and a revision nobody
touches costs a stat walk, never a hash, per request.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hub.cache import check_revision, list_refs, resolve_commit, scan_cache
from ..hub.layout import blob_name, path_problem, repo_folder_name
from ..integrity.hashing import blob_matches
from ..repos import RepoSpec

Identity = tuple[int, ...]


def identity(path: Path | str, follow: bool = True) -> Identity | None:
    """Device, inode, mode, size, mtime and ctime (ns) of `path`; None when it is absent. Any write
    changes the ctime, which no user can set back."""
    try:
        st = os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def fingerprint(repo_dir: Path, commit: str) -> tuple[Any, ...]:
    """The stat identity of everything `check_revision` reads for this commit (nothing opened)."""
    snap = repo_dir / "snapshots" / commit
    seen: list[Any] = [identity(snap, follow=False), identity(repo_dir / "blobs"),
                       identity(repo_dir / "trees" / f"{commit}.json")]
    for root, dirs, files in os.walk(snap):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            seen.append((path, identity(path, follow=False), identity(path)))
    return tuple(seen)


@dataclass
class ServedFile:
    path: str
    blob: str
    size: int
    file: Path  # the blob itself, by name (resolved inside the cache)
    identity: Identity | None = None  # of `file` when its bytes were last hashed

    def current(self) -> Identity | None:
        return identity(self.file)

    @property
    def lfs(self) -> bool:
        return len(self.blob) == 64

    def pointer(self) -> bytes:
        """The Git LFS pointer file the Hub keeps in git for an LFS file."""
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.blob}\n"
                f"size {self.size}\n").encode()

    def oid(self) -> str:
        """The git blob id the Hub lists: of the file itself, or of its LFS pointer."""
        return blob_name(self.pointer(), lfs=False) if self.lfs else self.blob

    def hashes_to_its_name(self) -> bool:
        """Hash the blob again (it changed on disk): still its name's bytes? Updates its identity."""
        before = self.current()
        try:
            ok = before is not None and blob_matches(self.file, self.blob) and self.current() == before
        except OSError:  # gone, or no longer a regular file
            return False
        if ok:
            self.identity = before
        return ok


@dataclass
class ServedRevision:
    commit: str
    files: dict[str, ServedFile]  # path -> file; empty when damaged
    damaged: str | None = None  # why it is not served
    seen: tuple[Any, ...] = ()  # the disk's fingerprint when it was judged
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)


@dataclass
class ServedRepo:
    repo_id: str
    repo_type: str
    folder: Path
    refs: dict[str, str] = field(default_factory=dict)  # ref name -> commit
    revisions: dict[str, ServedRevision] = field(default_factory=dict)  # commit -> revision

    def commit_for(self, rev: str) -> str | None:
        return rev if rev in self.revisions else self.refs.get(rev)


def judge(cache: Path, repo: ServedRepo, commit: str) -> ServedRevision:
    """Check one revision whole (every blob hashed) and index it, or say why it is not served."""
    seen = fingerprint(repo.folder, commit)  # before: a change during the check shows next time
    try:
        state = check_revision(cache, repo.repo_id, commit, repo_type=repo.repo_type)
    except OSError as exc:  # a folder that cannot be listed, a link that cannot be read
        return ServedRevision(commit, {}, f"cannot read it: {exc.strerror or exc}", seen)
    why = state.problems[0] if state.problems else None if state.files else "no files"
    why = why or next((f"{f.path!r}: {p}" for f in state.files if (p := path_problem(f.path))), None)
    if why:
        return ServedRevision(commit, {}, why, seen)
    files = {f.path: ServedFile(f.path, f.blob, f.size, (repo.folder / "blobs" / f.blob).resolve())
             for f in state.files}
    for served in files.values():  # taken right after the hash; a change between is caught when sent
        served.identity = served.current()
    return ServedRevision(commit, files, None, seen)


@dataclass
class MirrorIndex:
    cache: Path
    log: Callable[[str], None] = lambda _line: None
    changed: Callable[[], None] = lambda: None  # called when a revision is served again, or no longer
    repos: dict[tuple[str, str], ServedRepo] = field(default_factory=dict)  # (type, id) -> repo

    def summary(self) -> list[dict[str, Any]]:
        return [{"repo_id": r.repo_id, "repo_type": r.repo_type, "refs": r.refs,
                 "commits": sorted(c for c, v in r.revisions.items() if not v.damaged),
                 "damaged": {c: v.damaged for c, v in r.revisions.items() if v.damaged}}
                for r in self.repos.values()]

    async def current(self, repo: ServedRepo, commit: str) -> ServedRevision:
        """The revision as served now: a damaged one is checked again, once, if its disk changed."""
        revision = repo.revisions[commit]
        if not revision.damaged:
            return revision
        async with revision.lock:
            revision = repo.revisions[commit]
            if not revision.damaged:
                return revision
            if await asyncio.to_thread(fingerprint, repo.folder, commit) == revision.seen:
                return revision
            judged = await asyncio.to_thread(judge, self.cache, repo, commit)
            judged.lock = revision.lock
            repo.revisions[commit] = judged
            if not judged.damaged:
                self.changed()
            self.log(f"{repo.repo_id}@{commit[:12]} changed on disk and was checked again: "
                     + (f"still NOT served: {judged.damaged}" if judged.damaged else
                        f"serving it again ({len(judged.files)} files, every blob hashed)"))
            return judged

    async def still_genuine(self, repo: ServedRepo, commit: str, served: ServedFile) -> bool:
        """Whether `served` may be sent: its blob unchanged since hashed, or hashed again and equal.
        When not, the revision is marked damaged (with the fingerprint taken before the hash)."""
        if served.identity is not None and served.current() == served.identity:
            return True
        seen = await asyncio.to_thread(fingerprint, repo.folder, commit)
        if await asyncio.to_thread(served.hashes_to_its_name):
            return True
        why = f"blob {served.blob[:16]}… changed since the mirror started (damaged); restore it"
        revision = repo.revisions[commit]
        if not revision.damaged:
            repo.revisions[commit] = ServedRevision(commit, {}, why, seen, revision.lock)
            self.log(f"NOT serving {repo.repo_id}@{commit[:12]} any more: {why}")
            self.changed()
        return False


def build_index(cache: Path, specs: list[RepoSpec], all_public: bool,
                progress: Callable[[str], None],
                log: Callable[[str], None] = lambda _line: None) -> MirrorIndex:
    """Check and index what is served: the listed revisions, or (all_public) every cached one."""
    index = MirrorIndex(cache, log)
    wanted = [(s.repo_type, s.repo_id, s.revision) for s in specs]
    if all_public:
        wanted = [(st.repo_type, st.repo_id, st.commit) for st in scan_cache(cache, hash_blobs=False)]
    for repo_type, repo_id, revision in wanted:
        commit = resolve_commit(cache, repo_id, revision, repo_type)
        folder = cache / repo_folder_name(repo_id, repo_type)
        repo = index.repos.setdefault((repo_type, repo_id), ServedRepo(repo_id, repo_type, folder))
        repo.refs.update({n: c for n, c in list_refs(folder).items() if c == commit})
        if revision and revision != commit:
            repo.refs.setdefault(revision, commit)
        judged = repo.revisions[commit] = judge(cache, repo, commit)
        if judged.damaged:
            progress(f"NOT serving {repo_id}@{commit[:12]}: {judged.damaged}")
        else:
            progress(f"serving {repo_type} {repo_id}@{commit[:12]} ({len(judged.files)} files, "
                     "every blob hashed)")
    return index
