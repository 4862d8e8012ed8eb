"""`provision restore`: check every byte, plan, then stage and publish into the hub cache.

Order of work, so that a crash or Ctrl-C at any point leaves a consistent cache:
1. scan (no lock, no writes): free space for what the manifests declare, then every archive
   read within the bounds its declaration sets and held to it (`trust.accept`, the rule
   `check` and fetch apply too); a cache that contradicts an archive is refused before even the
   lock file exists. An archive the caller already admitted (`Admitted`: fetch, which also
   hashed it whole as it arrived) is not read here: its contents are taken as they are.
2. read (under the cache lock): hash every byte of every archive: the whole file against
   manifest.json / SHA256SUMS (in a thread; not for an `Admitted` one, hashed already), every
   blob against its name (`read`: in parallel where the archive allows). Blobs the cache lacks or
   holds damaged are staged in
   ``<cache>/.locks/provision-staging-*``; a blob it holds is hashed too, or compared byte for byte
   in a compressed stream. `--dry-run` runs this same pass with nothing staged, then stops.
3. publish: blobs, then snapshot links, then listings, then refs, each by `os.replace`; a repo
   folder the cache lacks is built whole in the staging folder and published by one `rename`.
4. prove: every ref the run wrote or kept points at a snapshot whose every file resolves to a
   blob of the right size (the bytes were hashed in step 2) — what huggingface_hub needs offline.
"""

from __future__ import annotations

import filecmp
import functools
import os
import posixpath
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..archive.compression import ARCHIVE_SUFFIXES, compression_of_head
from ..archive.contents import ArchiveContents
from ..console import ProgressFn, counted, no_progress
from ..errors import CacheError, IntegrityError, UsageError
from ..fsutil import (
    PRIVATE_DIR,
    cache_lock,
    clean_stale,
    disk_error,
)
from ..hub.cache import read_ref
from ..hub.layout import repo_folder_name
from ..hub.manifest import ArchiveEntry, read_manifest, read_sums
from ..integrity.hashing import sha256_file
from ..integrity.space import ensure_space, nearest_existing
from ..parallel import in_background
from ..trust.accept import admit, unused_blobs
from .plan import Action, ArchivePlan, RestorePlan
from .publish import prove, publish
from .read import ArchiveReader, ReadResult

STAGING_PREFIX = "provision-staging-"  # in the cache's PRIVATE_DIR


@dataclass(frozen=True)
class Admitted:
    """An archive its caller already held to the acceptance rule against its manifest entry (what
    `admit` returned) and hashed whole against that entry's `sha256` (fetch: as its bytes arrived).
    While the manifest still names that sha256, the scan takes these contents instead of reading
    the headers again, and no thread hashes the file again. The contents are the restore's: its
    read lets go of their members, so a caller hands each over once."""

    contents: ArchiveContents
    sha256: str

# ---------------------------------------------------------------------------- finding archives

def find_archives(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Expand folders into the archives they hold; returns (archives, non-archives skipped)."""
    found: list[Path] = []
    ignored: list[str] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                                and p.name.endswith(ARCHIVE_SUFFIXES)))
        elif path.is_file() and _looks_like_archive(path):
            found.append(path)
        elif path.is_file():
            ignored.append(str(path))
        else:
            raise UsageError(f"no such file or folder: {path}",
                             "pass a backup archive or a folder of them (default model_backups/)")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        held = f" (it holds only {', '.join(Path(i).name for i in ignored)})" if ignored else ""
        raise UsageError(f"no backups in {', '.join(map(str, paths))}{held}",
                         "download them: fetch them with a restore, on a host you can ssh to; or copy "
                         "backup archives there; a synthetic verify checks this machine meanwhile")
    return unique, ignored


def _looks_like_archive(path: Path) -> bool:
    """A file given by name that is no README or manifest: treat it as an archive if tar-like."""
    if path.name.endswith(ARCHIVE_SUFFIXES):
        return True
    if path.name in ("manifest.json", "SHA256SUMS") or path.suffix in (".md", ".txt", ".json", ".part"):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return True  # let the scan report why it cannot be read
    return compression_of_head(head) != "none" or head[257:262] == b"ustar"


# ---------------------------------------------------------------------------- checking

def _expected_hash(path: Path, entry: ArchiveEntry | None, sums: dict[str, str]) -> tuple[str | None, str]:
    """The archive's expected sha256 and where it comes from (None: only the blob names check it)."""
    if entry:
        return entry.sha256, "manifest"
    if path.name in sums:
        return sums[path.name], "SHA256SUMS"
    return None, "blob names"


def _absent_commits(repo_dir: Path, commits: set[str]) -> set[str]:
    """The commits the cache has no snapshot folder of: nothing below them needs a look."""
    return {c for c in commits if not os.path.lexists(repo_dir / "snapshots" / c)}


def _link_conflicts(contents: ArchiveContents, cache: Path) -> None:
    """Refuse a cache whose snapshot entries contradict the archive (same commit, other blob)."""
    for folder, repo in contents.repos.items():
        absent = _absent_commits(cache / folder, repo.commits)
        for rel, blob in repo.links.items():
            if rel.split("/", 2)[1] in absent:
                continue
            dest = cache / folder / rel
            if dest.is_symlink():
                have = posixpath.normpath(posixpath.join(posixpath.dirname(rel), os.readlink(dest)))
                if have != f"blobs/{blob}":
                    raise CacheError(f"{folder}/{rel} already links to {have}, not blobs/{blob}",
                                     "the cache disagrees with the backup: remove that snapshot "
                                     "folder and run the restore again; nothing was written")
            elif dest.is_dir():
                raise CacheError(f"{folder}/{rel} is a folder in the cache, a file in the backup",
                                 "remove that snapshot folder and run the restore again; "
                                 "nothing was written")


def _actions(contents: ArchiveContents, found: ReadResult, cache: Path, keep_refs: bool,
             done: dict[str, set[str]], unused: list[str]) -> list[Action]:
    """What restoring `contents` writes, given what the read pass found. `done` (folder -> paths
    in it, which name their kind: blobs/, snapshots/, trees/, refs/) dedupes; blobs no
    snapshot file uses are not kept, but named in `unused`."""
    actions: list[Action] = []

    def add(a: Action) -> None:
        paths = done.setdefault(a.folder, set())
        if a.path not in paths:
            paths.add(a.path)
            actions.append(a)

    for folder, repo in contents.repos.items():
        repo_dir = cache / folder
        links = {**repo.links, **{p: found.copies[(folder, p)] for p in repo.copies}}
        absent = _absent_commits(repo_dir, repo.commits)
        unused.extend(f"{folder}/blobs/{b}" for b in unused_blobs(repo, links))
        for blob in sorted(set(links.values())):
            key = (folder, blob)
            add(Action("blob", folder, f"blobs/{blob}", found.blobs[key], found.sizes[key]))
        for rel, blob in sorted(links.items()):
            state = ("new" if rel.split("/", 2)[1] in absent
                     else _link_state(repo_dir, rel, blob, found.staged_file(folder, blob)))
            add(Action("link", folder, rel, state, blob=blob))
        for rel, data in sorted(repo.trees.items()):
            dest = repo_dir / rel
            state = "present" if dest.is_file() and dest.read_bytes() == data else (
                "update" if dest.exists() else "new")
            add(Action("tree", folder, rel, state, len(data)))
        for name, commit in sorted(repo.refs.items()):
            add(_ref_action(repo_dir, folder, name, commit, keep_refs))
    return actions


def _link_state(repo_dir: Path, rel: str, blob: str, staged: str | None) -> str:
    dest = repo_dir / rel
    if dest.is_symlink():  # its target was checked against the archive by `_link_conflicts`
        return "present" if dest.exists() else "repair"
    if dest.is_file():  # a cache without symlinks holds copies: compare with the blob's bytes
        source = Path(staged) if staged else repo_dir / "blobs" / blob
        return "present" if source.is_file() and filecmp.cmp(dest, source, shallow=False) else "repair"
    return "new"


def _ref_action(repo_dir: Path, folder: str, name: str, commit: str, keep_refs: bool) -> Action:
    path = f"refs/{name}"
    raw = repo_dir / path
    have = read_ref(repo_dir, name)
    if have == commit:
        clean = raw.read_bytes() == commit.encode()
        return Action("ref", folder, path, "present" if clean else "update", commit=commit)
    if have and keep_refs and (repo_dir / "snapshots" / have).is_dir():
        return Action("ref", folder, path, "kept", commit=have, previous=have)
    return Action("ref", folder, path, "update" if raw.exists() else "new", commit=commit, previous=have)


# ---------------------------------------------------------------------------- running

def check_backups(paths: list[Path], progress: ProgressFn = no_progress, *,
                  admitted: Mapping[Path, Admitted] | None = None) -> RestorePlan:
    """Check backup files on their own (a copy on a USB disk, say): every member validated, every
    byte hashed, against manifest.json / SHA256SUMS where present (`admitted`: as `restore`). No
    cache is read or written."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="provision-check-") as empty:
        plan = restore(paths, Path(empty), progress, dry_run=True, for_cache=False, admitted=admitted)
    return replace(plan, cache=Path("-"))


def restore(paths: list[Path], cache: Path, progress: ProgressFn = no_progress, *,
            dry_run: bool = False, keep_refs: bool = False, for_cache: bool = True,
            admitted: Mapping[Path, Admitted] | None = None) -> RestorePlan:
    """Restore the archives at `paths` into `cache` (or, with `dry_run`, check all and write nothing).

    `admitted` (by resolved path): archives the caller already admitted and hashed whole; their
    blobs are still hashed, the cache still checked against them. Returns the plan that was
    carried out. Raises a `ProvisionError` whose message says what was and was not published.
    Kept whole: the order of its steps (scan without the lock, then read, publish and prove under
    it) is the safety argument of the module docstring.
    """
    archives, ignored = find_archives(paths)
    for p in ignored:
        progress(f"note: {p} is not a backup archive; skipped")
    scanned = _scan(archives, cache, progress, for_cache, admitted or {})
    if for_cache:  # `check_backups` has no cache: its space and permissions do not matter
        _check_space(cache, sum(_unseen_bytes(c, cache) for c, *_ in scanned))
    if dry_run:
        plan = _read_and_plan(scanned, cache, None, keep_refs, progress)
        if for_cache and plan.writes and not os.access(nearest_existing(cache), os.W_OK):
            raise CacheError(f"cannot write into {nearest_existing(cache)}",
                             "check the folder's permissions or choose another cache folder")
        return plan.as_returned(ignored)
    with cache_lock(cache, waiting=progress):
        clean_stale(cache, STAGING_PREFIX, [f for c, *_ in scanned for f in c.repos])
        staging = cache / PRIVATE_DIR / f"{STAGING_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            plan = _read_and_plan(scanned, cache, staging, keep_refs, progress)
            publish(plan, progress)
            prove(plan)
        except OSError as exc:
            raise disk_error(exc, staging) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return plan.as_returned(ignored)


#: an archive's contents, the sha256 its whole file is still to be hashed against (None: none
#: declared, or hashed already), and what declares it (manifest | SHA256SUMS | blob names)
Scanned = tuple[ArchiveContents, str | None, str]


def _scan(archives: list[Path], cache: Path, progress: ProgressFn, for_cache: bool,
          admitted: Mapping[Path, Admitted]) -> list[Scanned]:
    """Every archive read within its declaration and held to it (`admit`, unless `admitted` holds
    it against the sha256 its manifest entry names), against the cache's snapshots; with
    `for_cache`, what the manifests declare must fit before a byte is read. The manifests are let
    go on return: the contents stand for them from here on."""
    manifests = {folder: read_manifest(folder) for folder in dict.fromkeys(p.parent for p in archives)}
    entries = {path: manifests[path.parent].get(path.name) for path in archives}
    if for_cache:
        _check_space(cache, sum(_declared_bytes(e, cache) for e in entries.values() if e))
    scanned: list[Scanned] = []
    for path, entry in entries.items():
        expected, checked_by = _expected_hash(path, entry, read_sums(path.parent))
        pre = admitted.get(path)
        if pre is not None and entry is not None and pre.sha256 == entry.sha256:
            contents, expected = replace(pre.contents, path=path), None  # its members: the same list
        else:
            contents = admit(path, entry)
        _link_conflicts(contents, cache)
        if contents.skipped:
            skipped = counted(len(contents.skipped), "member")
            progress(f"note: {contents.path.name}: skipped {skipped} not part of a revision "
                     f"(e.g. {contents.skipped[0]})")
        scanned.append((contents, expected, checked_by))
    return scanned


def _read_and_plan(scanned: list[Scanned], cache: Path, staging: Path | None, keep_refs: bool,
                   progress: ProgressFn) -> RestorePlan:
    """Hash every byte (an archive's sha256, where still to check, in a thread beside its blobs),
    then plan the writes.
    Consumes `scanned`: each archive's contents are let go once its plan holds what it reports."""
    reader = ArchiveReader(cache, staging)
    plans: list[ArchivePlan] = []
    done: dict[str, set[str]] = {}
    scanned.reverse()
    while scanned:
        contents, expected, checked_by = scanned.pop()
        digest = in_background(functools.partial(sha256_file, contents.path)) if expected else None
        unused: list[str] = []
        try:
            reader.archive(contents, progress)
        except IntegrityError as err:  # which archive it was, for a caller that keeps the others (fetch)
            err.path = err.path or str(contents.path)
            raise
        contents.data.clear()  # every member read: the plan keeps what it reports, not each member
        if digest is not None and (got := digest()) != expected:
            raise IntegrityError(f"{contents.path.name}: sha256 {got[:16]}… does not match the expected "
                                 f"{expected[:16]}… ({checked_by})",  # type: ignore[index]
                                 "the backup is damaged or was changed; fetch or copy it again — "
                                 "nothing was written", path=contents.path)
        actions = _actions(contents, reader.found, cache, keep_refs, done, unused)
        if unused:
            progress(f"note: {contents.path.name}: {len(unused)} blobs that no snapshot file uses are not "
                     f"kept (e.g. {unused[0]})")
        plans.append(ArchivePlan.of(contents, checked_by, tuple(actions), tuple(unused)))
    return RestorePlan(cache, tuple(plans), staged_file=reader.found.staged_file,
                       staged_folder=reader.found.staged_folder)


def _missing_bytes(blobs: Path, sizes: dict[str, int]) -> int:
    """Bytes of the blobs in `sizes` (name -> size) that the cache's `blobs` folder does not hold at
    their size (one listing of the folder; only the names it holds are looked at)."""
    try:
        held = set(os.listdir(blobs))
    except OSError:
        held = set()
    return sum(0 if blob in held and (blobs / blob).is_file() and (blobs / blob).stat().st_size == size
               else size for blob, size in sizes.items())


def _declared_bytes(entry: ArchiveEntry, cache: Path) -> int:
    """Bytes of the blobs a manifest entry declares that the cache does not hold at their size."""
    return _missing_bytes(cache / repo_folder_name(entry.repo_id, entry.repo_type) / "blobs",
                          entry.blob_sizes())


def _unseen_bytes(contents: ArchiveContents, cache: Path) -> int:
    """Bytes of the blobs the cache does not hold at their size: what a restore will write at most
    (damaged blobs of the right size, found while hashing, come on top)."""
    return sum(_missing_bytes(cache / folder / "blobs", repo.blobs) + sum(repo.copies.values())
               for folder, repo in contents.repos.items())


def _check_space(cache: Path, needed: int) -> None:
    ensure_space(cache, needed, "the restore", folder_words="cache folder")
