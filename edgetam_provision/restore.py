"""`provision restore`: plan (read-only), then stage, verify and publish into the hub cache.

Order of work, so that a crash or Ctrl-C at any point leaves a consistent cache:
1. plan: validate every member (`archive.scan_archive`), compare with the cache -> a list of
   actions; `--dry-run` also checks each archive's sha256 against manifest.json / SHA256SUMS
   and stops here (a real restore computes that hash while staging).
2. stage: under the cache lock, stream the new blobs into ``<cache>/.provision-staging-*``,
   hashing each against its name. Any failure removes the staging folder; nothing is published.
3. publish: blobs, then snapshot links, then listings, then refs, each by `os.replace`.
   A blob that exists is never overwritten; a second run finds everything present.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .archive import ArchiveContents, iter_blobs, scan_archive
from .errors import CacheError, IntegrityError, UsageError
from .fsutil import (
    TMP_PREFIX,
    copy_atomic,
    disk_error,
    exclusive_lock,
    sha256_file,
    symlink_atomic,
    symlinks_supported,
    write_atomic,
)
from .hfcache import blob_hasher, read_ref, repo_id_from_folder
from .manifest import ArchiveEntry, read_manifest, read_sums

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst")
LOCK_PATH = ".locks/provision.lock"  # beside huggingface_hub's own lock files
STAGING_PREFIX = ".provision-staging-"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Action:
    """One thing a restore would write: kind is blob, link, file or ref."""

    kind: str
    folder: str
    path: str
    state: str  # new | present | update
    size: int = 0
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "repo_id": repo_id_from_folder(self.folder), "path": self.path,
                "state": self.state, "size": self.size, "detail": self.detail}


@dataclass(frozen=True)
class ArchivePlan:
    """One archive, checked, and what restoring it would do."""

    contents: ArchiveContents
    checked_by: str  # manifest | SHA256SUMS | blob names
    actions: tuple[Action, ...]
    expected_sha256: str | None = None

    @property
    def pending(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.state != "present")

    def summary(self) -> dict[str, object]:
        repos = {f: sorted(p.commits) for f, p in self.contents.repos.items()}
        pending = self.pending
        return {"archive": str(self.contents.path), "checked_by": self.checked_by,
                "repos": [{"repo_id": repo_id_from_folder(f), "commits": c} for f, c in repos.items()],
                "new_blobs": sum(a.kind == "blob" for a in pending),
                "new_bytes": sum(a.size for a in pending if a.kind == "blob"),
                "writes": len(pending),
                "status": "already present" if not pending else "restore",
                "actions": [a.to_dict() for a in pending]}


@dataclass(frozen=True)
class RestorePlan:
    cache: Path
    archives: tuple[ArchivePlan, ...]

    @property
    def pending(self) -> tuple[Action, ...]:
        return tuple(a for p in self.archives for a in p.pending)

    def to_dict(self) -> dict[str, object]:
        return {"cache": str(self.cache), "archives": [p.summary() for p in self.archives],
                "writes": len(self.pending)}


def find_archives(paths: list[Path]) -> list[Path]:
    """Expand folders into the archives they hold; reject paths that do not exist."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file()
                                and not p.name.startswith(".") and p.name.endswith(ARCHIVE_SUFFIXES)))
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"no such file or folder: {path}",
                             "pass a backup archive or a folder of them (default model_backups/)")
    if not found:
        raise UsageError(f"no backups found in {', '.join(map(str, paths))}",
                         "make them with `provision fetch --host HOST` or `provision backup`")
    return found


def _expected_hash(path: Path, entry: ArchiveEntry | None, sums: dict[str, str]) -> tuple[str | None, str]:
    """The archive's expected sha256 and where it comes from (None: only the blob names check it)."""
    if entry:
        return entry.sha256, "manifest"
    if path.name in sums:
        return sums[path.name], "SHA256SUMS"
    return None, "blob names"


def _compare_hash(path: Path, expected: str | None, actual: str | None) -> None:
    if expected is not None and actual != expected:
        raise IntegrityError(f"{path.name}: sha256 {(actual or '')[:16]}… does not match the expected "
                             f"{expected[:16]}…",
                             "the backup is damaged or was changed; fetch or copy it again")


def _check_manifest_files(contents: ArchiveContents, entry: ArchiveEntry) -> None:
    repo = contents.repos.get("models--" + entry.repo_id.replace("/", "--"))
    if repo is None:
        raise IntegrityError(f"{contents.path.name}: does not hold {entry.repo_id} as its manifest says",
                             "the backup and its manifest do not belong together")
    for f in entry.files:
        if repo.links.get(f"snapshots/{entry.commit}/{f.path}") != f.blob:
            raise IntegrityError(f"{contents.path.name}: {f.path} is missing or differs from the manifest",
                                 "the backup is damaged; fetch it again")


def plan_restore(paths: list[Path], cache: Path, hash_archives: bool = True) -> RestorePlan:
    """Check every archive and work out what restoring it would write. Writes nothing.

    With ``hash_archives=False`` the whole-archive sha256 is left to the caller (`restore`
    computes it in parallel with staging and checks it before publishing).
    """
    archives: list[ArchivePlan] = []
    for path in find_archives(paths):
        entry = read_manifest(path.parent).get(path.name)
        expected, checked_by = _expected_hash(path, entry, read_sums(path.parent))
        if hash_archives and expected:
            _compare_hash(path, expected, sha256_file(path))

        def cache_has_blob(folder: str, blob: str) -> bool:
            return (cache / folder / "blobs" / blob).is_file()

        contents = scan_archive(path, cache_has_blob, entry.blob_sizes() if entry else None)
        if entry:
            _check_manifest_files(contents, entry)
        archives.append(ArchivePlan(contents, checked_by, tuple(_actions(contents, cache)), expected))
    return RestorePlan(cache, tuple(archives))


def _actions(contents: ArchiveContents, cache: Path) -> list[Action]:
    actions: list[Action] = []
    for folder, repo in contents.repos.items():
        repo_dir = cache / folder
        for blob, size in repo.blobs.items():
            dest = repo_dir / "blobs" / blob
            if dest.is_file() and dest.stat().st_size == size:
                actions.append(Action("blob", folder, f"blobs/{blob}", "present", size))
            elif os.path.lexists(dest):
                raise CacheError(f"{folder}/blobs/{blob} exists in the cache but differs in size",
                                 "that cached blob is damaged: delete it and run the restore again")
            else:
                actions.append(Action("blob", folder, f"blobs/{blob}", "new", size))
        for rel, blob in sorted(repo.links.items()):
            dest = repo_dir / rel
            target = "../" * rel.count("/") + f"blobs/{blob}"
            if dest.is_symlink():
                have = posixpath.normpath(posixpath.join(posixpath.dirname(rel), os.readlink(dest)))
                if have != f"blobs/{blob}":
                    raise CacheError(f"{folder}/{rel} already links to {have}, not blobs/{blob}",
                                     "the cache disagrees with the backup: remove that snapshot "
                                     "folder and run the restore again")
                actions.append(Action("link", folder, rel, "present", detail=target))
            elif dest.is_file() and dest.stat().st_size == repo.blobs.get(blob, dest.stat().st_size):
                actions.append(Action("link", folder, rel, "present", detail="copy"))
            else:
                actions.append(Action("link", folder, rel, "new", detail=target))
        for rel, data in sorted(repo.small_files.items()):
            dest = repo_dir / rel
            state = "present" if dest.is_file() and dest.read_bytes() == data else (
                "update" if dest.exists() else "new")
            actions.append(Action("file", folder, rel, state, len(data)))
        for name, commit in sorted(repo.refs.items()):
            have = read_ref(repo_dir, name)
            raw = (repo_dir / "refs" / name)
            clean = raw.is_file() and raw.read_bytes() == commit.encode()
            state = "present" if have == commit and clean else ("update" if raw.exists() else "new")
            actions.append(Action("ref", folder, f"refs/{name}", state, detail=commit if
                                  state != "update" else f"{have} -> {commit}"))
    return actions


def _clean_stale(cache: Path, folders: list[str]) -> None:
    """Remove what restores that died (their pid is gone) left: staging folders, temp siblings."""
    for p in cache.glob(STAGING_PREFIX + "*"):
        if _dead(p.name, STAGING_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
    for folder in folders:
        for p in (cache / folder).rglob(TMP_PREFIX + "*"):
            if _dead(p.name, TMP_PREFIX):
                p.unlink(missing_ok=True)


def _dead(name: str, prefix: str) -> bool:
    pid = name[len(prefix):].split("-")[0]
    return pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore(paths: list[Path], cache: Path, progress: Progress = lambda _m: None) -> RestorePlan:
    """Restore the archives at `paths` into `cache`; returns the plan that was carried out.

    Every member is validated before the cache is touched; the actions are worked out again under
    the cache lock, so concurrent restores never interleave; each archive's sha256 is computed in
    a thread while its blobs are staged (and hashed), and checked before anything is published.
    """
    checked = plan_restore(paths, cache, hash_archives=False)
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL: hash while staging
        digests = {p.contents.path: pool.submit(sha256_file, p.contents.path)
                   for p in checked.archives if p.expected_sha256}
        with exclusive_lock(cache / LOCK_PATH):
            _clean_stale(cache, [f for p in checked.archives for f in p.contents.repos])
            # Again, under the lock: the first pass (above) refused conflicts before the cache was
            # touched at all; this one sees what a concurrent restore may have published since.
            plan = RestorePlan(cache, tuple(ArchivePlan(p.contents, p.checked_by,
                                                        tuple(_actions(p.contents, cache)),
                                                        p.expected_sha256)
                                            for p in checked.archives))
            needed = sum(a.size for a in plan.pending if a.kind == "blob")
            free = shutil.disk_usage(cache).free
            if needed > free:
                raise CacheError(f"the restore needs {needed} bytes but {cache} has {free} free",
                                 "free some disk space or choose another --cache-dir; "
                                 "nothing was written")
            staging = cache / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            try:
                staged = _stage(plan, staging, progress) if plan.pending else {}
                for p in plan.archives:  # the whole-archive check, before anything is published
                    if p.expected_sha256:
                        _compare_hash(p.contents.path, p.expected_sha256, digests[p.contents.path].result())
                if plan.pending:
                    _publish(plan, cache, staged, progress)
            except OSError as exc:
                raise disk_error(exc, staging) from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return plan


def _stage(plan: RestorePlan, staging: Path, progress: Progress) -> dict[tuple[str, str], Path]:
    """Copy every new blob into `staging`, hashing it; raise on the first mismatch."""
    staged: dict[tuple[str, str], Path] = {}
    buf = bytearray(8 * 1024 * 1024)
    view = memoryview(buf)
    for ap in plan.archives:
        wanted = {(a.folder, a.path.split("/", 1)[1]) for a in ap.pending if a.kind == "blob"}
        if not wanted:
            continue
        progress(f"verifying and staging {len(wanted)} blobs from {ap.contents.path.name}")
        for folder, blob, size, stream in iter_blobs(ap.contents):
            if (folder, blob) not in wanted or (folder, blob) in staged:
                continue
            dest = staging / folder / blob
            dest.parent.mkdir(parents=True, exist_ok=True)
            h = blob_hasher(blob, size)
            got = 0
            with open(dest, "xb") as out:
                while n := stream.readinto(buf):
                    chunk = view[:n]
                    h.update(chunk)
                    out.write(chunk)
                    got += n
            if got != size or h.hexdigest() != blob:
                raise IntegrityError(f"{ap.contents.path.name}: {folder}/blobs/{blob} does not match "
                                     "its hash", "the backup is damaged; fetch it again — "
                                     "nothing was published")
            staged[(folder, blob)] = dest
        missing = wanted - staged.keys()
        if missing:
            raise IntegrityError(f"{ap.contents.path.name}: blob {sorted(missing)[0][1]} vanished "
                                 "while reading", "the archive changed during the restore")
    return staged


def _publish(plan: RestorePlan, cache: Path, staged: dict[tuple[str, str], Path],
             progress: Progress) -> None:
    """Move staged blobs into place, then links, then listings, then refs."""
    actions = plan.pending
    use_links = symlinks_supported(cache)
    for a in actions:
        if a.kind == "blob":
            dest = cache / a.folder / a.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                os.replace(staged[(a.folder, a.path.split("/", 1)[1])], dest)
    for a in actions:
        if a.kind == "link":
            dest = cache / a.folder / a.path
            if use_links:
                symlink_atomic(a.detail, dest)
            else:
                copy_atomic(cache / a.folder / "blobs" / posixpath.basename(a.detail), dest)
    for ap in plan.archives:
        for a in ap.pending:
            if a.kind == "file":
                write_atomic(cache / a.folder / a.path, ap.contents.repos[a.folder].small_files[a.path])
    for a in actions:
        if a.kind == "ref":
            write_atomic(cache / a.folder / a.path, a.detail.split(" -> ")[-1])
    progress(f"published {len(actions)} entries into {cache}")
