"""The last steps of a restore: publish in a safe order, then prove what exit 0 promises."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ..console import ProgressFn, counted
from ..errors import CacheError, IntegrityError
from ..fsutil import copy_atomic, disk_error, symlink_atomic, symlinks_supported, write_atomic
from ..hub.layout import repo_id_from_folder, repo_type_from_folder
from .plan import Action, RestorePlan

KINDS = ("blob", "link", "tree", "ref")  # the order of publishing: nothing points at what is not there


def publish(plan: RestorePlan, progress: ProgressFn) -> list[Action]:
    """Move staged blobs into place, then links, then listings, then refs; returns what was written.

    A repo folder the cache lacked was staged whole (`RestorePlan.staged_folder`): its links,
    listings and refs are made there too, and one `rename` publishes it, all or nothing, with one
    directory update instead of one per blob (100,000 fewer for as many small files). A failure part-way
    raises a `CacheError` that names what was already published. Each folder is made once; a link
    new to the cache is created in place (a symlink appears whole), one that replaces another goes
    through a temporary name.
    """
    writes = plan.writes
    cache = plan.cache
    use_links = symlinks_supported(cache) if writes else True
    data: dict[tuple[str, str], bytes] = {}  # a listing as the first archive holding it has it (its action's)
    for p in plan.archives:
        for key, d in p.trees.items():
            data.setdefault(key, d)
    published: list[Action] = []
    made: set[str] = set()  # folders known to exist
    root = str(cache)
    staged_at = {f: plan.staged_folder(f) for f in {a.folder for a in writes}}  # None: entry by entry
    whole = sorted(f for f, at in staged_at.items() if at)

    def write(a: Action, base: str) -> None:
        """Entry `a` into the repo folder at `base` (the cache's, or the one staged whole)."""
        dest = f"{base}/{a.path}"  # a str: a Path costs more than the write
        parent = dest.rpartition("/")[0]
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        if a.kind == "blob":
            staged = str(plan.staged_file(a.folder, a.path[len("blobs/"):]))
            if staged != dest:
                os.replace(staged, dest)
        elif a.kind == "link" and use_links:
            _link("../" * a.path.count("/") + f"blobs/{a.blob}", dest, a.state)  # from its folder
        elif a.kind == "link":
            copy_atomic(Path(f"{base}/blobs/{a.blob}"), Path(dest))
        else:
            write_atomic(Path(dest), data[(a.folder, a.path)] if a.kind == "tree" else str(a.commit))

    at = root
    try:
        for a in _in_order(writes):
            at = f"{root}/{a.folder}/{a.path}"
            write(a, staged_at[a.folder] or f"{root}/{a.folder}")
            if a.folder not in whole:
                published.append(a)
        for folder in whole:
            mine, at = [a for a in writes if a.folder == folder], f"{root}/{folder}"
            staged = str(staged_at[folder])
            _only_planned_blobs(f"{staged}/blobs", {a.path[len("blobs/"):] for a in mine if a.kind == "blob"})
            try:
                os.rename(staged, at)
            except OSError as exc:  # it came meanwhile (a download beside the restore): entry by entry
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                for a in _in_order(mine):
                    write(a, at)
            published.extend(mine)
    except OSError as exc:
        err = disk_error(exc, Path(at))
        raise CacheError(err.message.replace("; nothing was published", ""),
                         _partial_hint(published, len(writes))) from None
    progress(f"published {counted(len(published), 'entry', 'entries')} into {cache}")
    return published


def _in_order(actions: tuple[Action, ...] | list[Action]) -> Iterator[Action]:
    """`actions` in the order of publishing (`KINDS`), each kind in the plan's order."""
    for kind in KINDS:
        yield from (a for a in actions if a.kind == kind)


def _only_planned_blobs(folder: str, planned: set[str]) -> None:
    """A folder staged whole keeps only the blobs of its plan: a hand-made backup's blob that no
    file uses was read and staged like the others, and is not kept."""
    for name in os.listdir(folder):
        if name not in planned:
            os.unlink(f"{folder}/{name}")


def _link(target: str, dest: str, state: str) -> None:
    """The snapshot link `dest` -> `target`: created in place when the cache had none there (and
    has none still), else replacing what is there atomically."""
    if state == "new":
        try:
            os.symlink(target, dest)
            return
        except FileExistsError:  # something came since the plan: replaced below
            pass
    symlink_atomic(target, Path(dest))


def _partial_hint(published: list[Action], total: int) -> str:
    if not published:
        return "fix the cause and run it again; nothing was published"
    kinds = sorted({a.kind + "s" for a in published})
    return (f"{len(published)} of {total} entries ({', '.join(kinds)}) were published, no ref was moved "
            "to an incomplete snapshot; fix the cause and run the restore again to complete it"
            if not any(a.kind == "ref" for a in published) else
            f"{len(published)} of {total} entries were published; run the restore again to complete it")


def prove(plan: RestorePlan) -> None:
    """The invariant behind exit 0: every ref the run wrote or kept points at a snapshot whose every
    file resolves to a blob whose bytes match its name, as huggingface_hub reads it offline.

    The archive's blobs were hashed in this run, so their files are checked by size, and each link
    by the file it reaches (the blob's own: same device and inode, as resolving both paths would
    find); a snapshot a kept ref points at is hashed in full.
    """
    from ..hub.cache import check_revision

    actions = [a for ap in plan.archives for a in ap.actions]
    sizes: dict[str, dict[str, int]] = {}  # folder -> blob path -> size
    for a in actions:
        if a.kind == "blob":
            sizes.setdefault(a.folder, {})[a.path] = a.size
    root = str(plan.cache)
    for a in actions:
        if a.kind == "link":
            folder = f"{root}/{a.folder}"  # names the scan checked: plain, relative
            blob = _stat(f"{folder}/blobs/{a.blob}", os.stat)  # not kept: 100,000 of them cost 40 MB
            if not _reaches(f"{folder}/{a.path}", blob, sizes[a.folder][f"blobs/{a.blob}"]):
                raise IntegrityError(f"after the restore {a.folder}/{a.path} does not resolve to its blob",
                                     "something changed the cache during the restore; run it again")
    for a in actions:
        if a.kind == "ref":
            repo_dir = plan.cache / a.folder
            raw = (repo_dir / a.path).read_bytes() if (repo_dir / a.path).is_file() else b""
            ok = raw == str(a.commit).encode()
            if ok and a.state == "kept":
                repo_id = repo_id_from_folder(a.folder) or a.folder
                state = check_revision(plan.cache, repo_id, str(a.commit),
                                       repo_type=repo_type_from_folder(a.folder))
                ok = state.ok and bool(state.files)
            if not ok:
                raise IntegrityError(f"after the restore {a.folder}/{a.path} does not point at a complete, "
                                     "intact snapshot", "run `provision status` to see what is damaged, "
                                     "then restore again without keeping the refs")


def _reaches(path: str, blob: os.stat_result | None, size: int) -> bool:
    """The snapshot entry at `path` resolves to the blob's own file (`blob`), or is a copy of it
    (a regular file, not a link, of the blob's `size`: a cache without symlinks)."""
    have = _stat(path, os.stat)  # through a link
    if (have is None or blob is None or not (stat.S_ISREG(have.st_mode) and stat.S_ISREG(blob.st_mode))
            or have.st_size != size):
        return False
    if (have.st_dev, have.st_ino) == (blob.st_dev, blob.st_ino):
        return True
    entry = _stat(path, os.lstat)
    return entry is not None and not stat.S_ISLNK(entry.st_mode)


def _stat(path: str, how: Callable[[str], os.stat_result]) -> os.stat_result | None:
    try:
        return how(path)
    except OSError:
        return None
