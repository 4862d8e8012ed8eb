"""The one acceptance rule for a backup archive ([docs/accepted.md](../../docs/accepted.md)).

*What is kept is exactly what was declared, and reading it is bounded by what was declared before
its first byte.* An archive's declaration is its manifest entry: written by `provision backup`,
or by `provision fetch` from the host's announcement, which fetch has already held to the request
(the repo, the revision, the archive's name and size). A hand-made backup (``tar czf`` of a cache)
has none: it declares only itself, so what is kept is what it holds consistently, and reading it
is bounded by its own size.

`admit` applies the rule, the same for `restore`, `restore --dry-run`, `check` and fetch's own
check of what it pulled: `bounds_for` fixes the bounds from the declaration, the scan reads within
them (`archive.untrusted`), and `judge` keeps exactly the declaration (or, without one, a
consistent cache). `unused_blobs` names what a hand-made backup carries that no file uses.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..archive.compression import compression_of
from ..archive.contents import ArchiveContents, RepoPayload
from ..archive.tar_io import BOUND_HINT, CORRUPT_HINT, Bounds
from ..archive.untrusted import UNSAFE_HINT, scan_archive
from ..errors import CorruptArchiveError, IntegrityError, UnsafeArchiveError
from ..hub.layout import path_problem, repo_folder_name
from ..hub.manifest import ArchiveEntry

#: bytes a member may take beyond its data: its header, a pax header holding names up to 900
#: bytes (path and link target), and the padding of its data to a whole block
MEMBER_OVERHEAD = 4096
FIXED_MEMBERS = 16  # the repo's own folders: itself, blobs, refs, snapshots/<commit>, trees, ...
STREAM_END = 2 * 10240  # the end-of-archive blocks and the padding of the last record
#: a backup without a manifest may expand at most this many times its size, or to this many bytes
#: (whichever is more): model weights compress by 1.1x, tokenizers and configs by 3 to 10x
HANDMADE_RATIO = 100
HANDMADE_FLOOR = 256 * 1024 * 1024
DECLARED_HINT = "the backup is not what its manifest declares; fetch it again — nothing was written"


def listing_bound(entry: ArchiveEntry) -> int:
    """Bytes a ``trees/<commit>.json`` listing of the declared files may take: its fields (about
    200 bytes a file) with room to spare, and each path as JSON may escape it (6 bytes a byte)."""
    return 4096 + sum(1024 + 6 * len(f.path.encode("utf-8", "surrogateescape")) for f in entry.files)


def bounds_for(entry: ArchiveEntry | None, size: int, compression: str) -> Bounds:
    """The bounds an archive of `size` bytes is read within, from its declaration alone."""
    if entry is None:
        if compression == "none":
            return Bounds(size, size, "the archive's own size")
        total = max(HANDMADE_RATIO * size, HANDMADE_FLOOR)
        return Bounds(total, total, f"a backup without a manifest expands at most {HANDMADE_RATIO}x its "
                                    f"{size} bytes, or to {HANDMADE_FLOOR} bytes")
    blobs = entry.blob_sizes()
    listing = listing_bound(entry)
    members = (FIXED_MEMBERS + len(blobs) + sum(1 + f.path.count("/") for f in entry.files)
               + 5 * len(entry.refs))  # a ref may have up to 4 parent folders
    total = sum(blobs.values()) + listing + MEMBER_OVERHEAD * members + STREAM_END
    why = f"what its manifest declares: {len(entry.files)} files of {sum(blobs.values())} bytes"
    return Bounds(total, max([listing, *blobs.values()]), why, blobs)


def admit(path: Path, entry: ArchiveEntry | None) -> ArchiveContents:
    """Read the archive at `path` within the bounds its declaration sets, and hold what it holds to
    that declaration (`judge`). Writes nothing; raises a `ProvisionError` naming what is refused."""
    try:
        size, kind = path.stat().st_size, compression_of(path)
    except OSError as exc:
        raise CorruptArchiveError(f"{path.name}: cannot read ({exc.strerror or exc})", CORRUPT_HINT) from None
    if entry is not None and size != entry.size:
        raise IntegrityError(f"{path.name}: {size} bytes, not the {entry.size} bytes (sha256 "
                             f"{entry.sha256[:16]}…) its manifest declares", DECLARED_HINT)
    contents = scan_archive(path, bounds_for(entry, size, kind))
    judge(contents, entry)
    return contents


def judge(contents: ArchiveContents, entry: ArchiveEntry | None) -> None:
    """The rule on what an archive holds: every name one the cache can hold and serve, every
    repo consistent (links to carried blobs, refs to held commits, complete listings), and, with
    a declaration, exactly what it declares."""
    for folder, repo in contents.repos.items():
        for rel in sorted({*repo.links, *repo.copies}):
            problem = path_problem(rel.split("/", 2)[2])
            if problem:
                raise _unsafe(f"{folder}/{rel}"[:300], problem, UNSAFE_HINT)
        _consistent(folder, repo)
    if entry is not None:
        _exactly_declared(contents, entry)


def unused_blobs(repo: RepoPayload, links: dict[str, str]) -> list[str]:
    """Blobs a hand-made backup carries that none of its snapshot files (`links`: snapshot path ->
    blob, plain files of ``tar -h`` included) use: not kept. (With a manifest there are none.)"""
    return sorted(set(repo.blobs) - set(links.values()))


def _unsafe(member: str, why: str, hint: str = BOUND_HINT) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"unsafe archive member {member!r}: {why}", hint)


def _consistent(folder: str, repo: RepoPayload) -> None:
    """Every link names a blob the archive carries; every ref names a commit it has files of;
    every listing's files are all there."""
    for rel, blob in repo.links.items():
        if blob not in repo.blobs:
            raise _unsafe(f"{folder}/{rel}", f"links to blob {blob}, which the archive does not hold",
                          UNSAFE_HINT)
    commits = repo.commits
    if not commits:
        raise _unsafe(folder, "holds no snapshot files", UNSAFE_HINT)
    for name, commit in repo.refs.items():
        if commit not in commits:
            raise _unsafe(f"{folder}/refs/{name}", f"points to {commit}, which has no snapshot files here",
                          UNSAFE_HINT)
    for rel, data in repo.trees.items():
        commit = rel.split("/")[1][:-len(".json")]
        listed = _listed(data)
        have = {p.split("/", 2)[2] for p in (*repo.links, *repo.copies) if p.split("/")[1] == commit}
        missing = sorted(set(listed) - have)
        if missing:
            raise CorruptArchiveError(f"{folder}@{commit[:12]}: {missing[0]} is listed in {rel} but not "
                                      "in the archive (incomplete revision)", CORRUPT_HINT)


def _listed(data: bytes) -> dict[str, object]:
    listing = json.loads(data)  # valid JSON: the scan checked
    files = listing.get("files") if isinstance(listing, dict) else None
    return files if isinstance(files, dict) else {}


def _exactly_declared(contents: ArchiveContents, entry: ArchiveEntry) -> None:
    """One repo folder, one commit's snapshot of exactly the declared files, its refs, its listing."""
    name, folder = contents.path.name, repo_folder_name(entry.repo_id, entry.repo_type)
    for other in sorted(contents.repos):
        if other != folder:
            raise _unsafe(other, f"a repo its manifest does not declare (it declares {entry.repo_id} only)")
    repo = contents.repos.get(folder)
    if repo is None:
        raise IntegrityError(f"{name}: does not hold {entry.repo_id} as its manifest says",
                             "the backup and its manifest do not belong together")
    declared = {f"snapshots/{entry.commit}/{f.path}": f.blob for f in entry.files}
    for rel in sorted({*repo.links, *repo.copies}):
        if rel not in declared:
            what = "a file" if rel.split("/")[1] == entry.commit else "a snapshot of a commit"
            raise _unsafe(f"{folder}/{rel}", f"{what} its manifest does not declare ({entry.commit[:12]})")
    for f in entry.files:
        if repo.links.get(f"snapshots/{entry.commit}/{f.path}") != f.blob:
            raise IntegrityError(f"{name}: {f.path} is missing or differs from the manifest",
                                 "the backup is damaged; fetch it again")
    for ref, commit in sorted(repo.refs.items()):
        if ref not in entry.refs:
            raise _unsafe(f"{folder}/refs/{ref}", "a ref its manifest does not declare")
        if commit != entry.commit:
            raise _unsafe(f"{folder}/refs/{ref}", f"points to {commit}, its manifest declares {entry.commit}")
    for ref in entry.refs:
        if ref not in repo.refs:
            raise IntegrityError(f"{name}: refs/{ref} is declared by its manifest but missing", DECLARED_HINT)
    for rel, data in repo.trees.items():
        if rel != f"trees/{entry.commit}.json":
            raise _unsafe(f"{folder}/{rel}", "a listing of a commit its manifest does not declare")
        _listing_declared(f"{folder}/{rel}", _listed(data), entry)


def _listing_declared(member: str, listed: dict[str, object], entry: ArchiveEntry) -> None:
    """A listing names exactly the declared files, each with its size and blob."""
    files = {f.path: f for f in entry.files}
    for path in sorted(set(listed) ^ set(files)):
        raise _unsafe(member, f"lists {path!r}, which its manifest " + (
            "does not declare" if path in listed else "declares but the listing lacks"))
    for path, info in listed.items():
        f = files[path]
        hashes = {info.get("lfs_sha256"), info.get("blob_id")} if isinstance(info, dict) else set()
        if not isinstance(info, dict) or info.get("size") != f.size or f.blob not in hashes:
            raise _unsafe(member, f"lists {path!r} otherwise than its manifest ({f.size} bytes, "
                                  f"blob {f.blob})")
