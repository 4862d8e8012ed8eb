"""Read a backup archive as hostile input: every member is validated before anything is written.

`scan_archive` reads within `Bounds` fixed before the first byte (each member's size is checked
before tarfile skips past it), checks each member against the hub cache layout (path escapes,
links, devices, modes, duplicates, refs, sizes against a manifest), runs tarfile's ``data`` filter
over it as a second layer, and insists on the end-of-archive marker, so a tar cut at a member
boundary is refused. What of it may be kept is `trust.accept`'s to say. tarfile is never
allowed to write: `archive.data` gives member bytes to the caller, which hashes them
against their names before anything reaches the cache.

Hand-made backups are welcome: any leading folders up to and including ``hub/`` (``./``,
``Users/me/.cache/huggingface/hub/``), a whole ``hub/`` folder (its ``CACHEDIR.TAG`` and
``.locks/`` are skipped, as are ``.no_exist/`` markers and ``*.incomplete`` downloads), and
``tar -h`` backups whose snapshot entries are plain files (hashed into blobs when read).
"""

from __future__ import annotations

import json
import posixpath
import re
import stat
import sys
import tarfile
from pathlib import Path

from ..errors import CorruptArchiveError, UnsafeArchiveError
from ..hub.layout import BLOB_RE, COMMIT_RE, FOLDER_RE, REF_NAME_RE, TREE_NAME_RE, is_repo_folder_name
from .compression import STREAM_ERRORS, compression_of
from .contents import ArchiveContents, DataMember, RepoPayload
from .tar_io import BOUND_HINT, CORRUPT_HINT, Bounds, check_end, members, open_tar

MAX_SMALL = 64 * 1024 * 1024  # refs and trees listings are read into memory, so bounded
MAX_REF = 256
UNSAFE_HINT = "this archive is not a Hugging Face cache backup; nothing was written"
FILTER_ROOT = "/nonexistent-provision-filter-root"
TYPE_NAMES = {tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
              tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO",
              tarfile.CONTTYPE: "a contiguous file"}

#: tarfile's own data filter (Python 3.12, backported to 3.8.17, 3.9.17, 3.10.12, 3.11.4): a second
#: layer of checks where the Python has it. Where it does not (Debian 12's 3.11.2, Ubuntu 22.04's
#: early 3.10), the checks of this module, which refuse everything it refuses, stand alone.
DATA_FILTER = getattr(tarfile, "data_filter", None)
FILTER_ERROR: type[Exception] = getattr(tarfile, "FilterError", Exception)
#: what reading a damaged archive raises (ValueError: malformed pax numbers)
READ_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, ValueError, *STREAM_ERRORS)


def _unsafe(member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"unsafe archive member {member!r}: {why}", UNSAFE_HINT)


def _damaged(path: Path, why: str) -> CorruptArchiveError:
    return CorruptArchiveError(f"{path.name}: {why}", CORRUPT_HINT)


MAX_COMPONENT = 255  # bytes in one path component: NAME_MAX on Linux and macOS
MAX_NAME = 900  # bytes in a member's whole name: well inside macOS's PATH_MAX (1024) below a cache
BAD_CHAR = re.compile(r"[\x00-\x1f\\\x7f]")  # control characters and backslash


DRIVE = re.compile(r"[A-Za-z]:")


def split_name(raw: str) -> list[str]:
    """Lexically check a member name and split it; reject anything that could escape, or that no
    filesystem of the user's could hold."""
    if BAD_CHAR.search(raw):
        raise _unsafe(raw, "control character or backslash in the name")
    size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME:
        raise _unsafe(raw[:80] + "…", f"a name longer than {MAX_NAME} bytes")
    if raw.startswith("/") or DRIVE.match(raw):
        raise _unsafe(raw, "absolute path")
    name = raw[2:] if raw.startswith("./") else raw
    parts = name.rstrip("/").split("/")
    if name in ("", ".") and raw.startswith("."):
        return []  # "./" itself: the archive's root folder
    if "" in parts or "." in parts or ".." in parts:
        raise _unsafe(raw, "path with '..', '.' or empty components")
    if size > MAX_COMPONENT and any(len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT for p in parts):
        raise _unsafe(raw[:80] + "…", f"a path component longer than {MAX_COMPONENT} bytes")
    return parts


DIR, FILE, LINK = "dir", "file", "link"


class _Scan:
    """State of one scan: the repos found, the prefix they share, what was skipped."""

    def __init__(self, path: Path, bounds: Bounds | None, physical: int | None) -> None:
        self.path, self.bounds, self.physical = path, bounds, physical
        self.expected_sizes = bounds.sizes if bounds else None
        self.repos: dict[str, RepoPayload] = {}
        self.data: list[DataMember] = []
        self.skipped: list[str] = []
        self.outside: list[tuple[str, list[str], bool]] = []  # (name, parts, is_dir) outside repos
        self.seen: dict[str, str] = {}  # member key -> DIR, FILE or LINK (symbolic or hard)
        self.parents: set[str] = set()  # every folder some member lies in
        self.folders: dict[str, int] = {}  # folder some member lies in -> index of its repo folder (-1)
        self.regular: dict[str, DataMember] = {}  # member key -> a data member (what a hard link may repeat)
        self.prefix: tuple[str, ...] | None = None

    def member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        within(self.path, m, self.bounds, self.physical)
        parts = split_name(m.name)
        key = "/".join(parts)
        if key == m.name:
            key = m.name  # one string for the member's name and its key in the sets below
        if key in self.seen:
            raise _unsafe(m.name, "duplicate member name")
        self.seen[key] = DIR if m.isdir() else LINK if m.issym() or m.islnk() else FILE
        parent = key.rpartition("/")[0]
        at = self.folders.get(parent)
        if at is None:  # the first member in this folder: the folders above it, once
            at = self.folders[parent] = self._folder(m, parts)
        if not m.isdir() and key in self.parents:  # the reverse order: the folder's members came first
            raise _unsafe(m.name, "a file or link where other members need a folder")
        repeat = self._hard_link_target(m) if m.islnk() else None
        if repeat is None:
            _check_type_and_mode(m)
        idx = at if at >= 0 or not parts or not is_repo_folder_name(parts[-1]) else len(parts) - 1
        if idx < 0 or ".locks" in parts[:idx]:
            _second_layer(m)
            self.outside.append((m.name, parts, m.isdir()))
            return
        if at < 0:  # the repo's folder itself: its leading folders are checked as a folder's are
            self._leading(m, parts, idx)
        folder = parts[idx]
        repo = self.repos.get(folder)
        if repo is None:
            repo = self.repos[folder] = RepoPayload(folder)
        rest = parts[idx + 1:]
        if not _pinned(m, rest):
            _second_layer(m)
        if repeat is not None:
            self._repeat(m, repo, rest, repeat)
            return
        data = _classify(self, tar, m, repo, rest)
        if data is not None:
            self.regular[key] = data

    def _folder(self, m: tarfile.TarInfo, parts: list[str]) -> int:
        """What depends only on a member's folder, checked at its first member: no folder above is a
        file or link; the repo folder's place and name. Its index in `parts` (-1: none above)."""
        above = ["/".join(parts[:i]) for i in range(1, len(parts))]
        kinds = [self.seen.get(p, DIR) for p in above]
        if LINK in kinds:
            raise _unsafe(m.name, "member below a symbolic link")
        if FILE in kinds:
            raise _unsafe(m.name, "member below a file (a cache cannot hold both)")
        self.parents.update(above)  # a later file or link at one of them is refused
        idx = next((i for i, p in enumerate(parts[:-1]) if is_repo_folder_name(p)), -1)
        if idx >= 0 and ".locks" not in parts[:idx]:
            self._leading(m, parts, idx)
        return idx

    def _leading(self, m: tarfile.TarInfo, parts: list[str], idx: int) -> None:
        """The folders before a repo folder (up to ``hub/``, the same for all) and its name."""
        prefix = tuple(parts[:idx])
        if self.prefix is None:
            if prefix and prefix[-1] != "hub":
                raise _unsafe(m.name, "unexpected leading folders (only folders up to hub/ may "
                                      "come before models--ORG--NAME)")
            self.prefix = prefix
        elif prefix != self.prefix:
            raise _unsafe(m.name, "members disagree on their leading folders")
        if not FOLDER_RE.match(parts[idx]):
            raise _unsafe(m.name, "not a valid models--[ORG--]NAME folder name")

    def _hard_link_target(self, m: tarfile.TarInfo) -> DataMember:
        """`tar -h` stores a file reached twice (snapshot link and blob) as a hard link to the
        first: allowed only to an earlier regular blob or snapshot member of the same repo."""
        try:
            target = self.regular.get("/".join(split_name(m.linkname)))
        except UnsafeArchiveError:
            target = None
        if target is None:
            raise _unsafe(m.name, "a hard link is not allowed (except to an earlier file of the same repo)")
        return target

    def _repeat(self, m: tarfile.TarInfo, repo: RepoPayload, rest: list[str], target: DataMember) -> None:
        folder, source, size = target.folder, target.path, target.size
        rel = "/".join(rest)
        if folder != repo.folder:
            raise _unsafe(m.name, "hard link to another repo's file")
        if len(rest) == 2 and rest[0] == "blobs" and BLOB_RE.match(rest[1]):
            _check_size(self, m, rest[1], size)
            repo.blobs[rest[1]] = size
        elif len(rest) >= 3 and rest[0] == "snapshots" and COMMIT_RE.match(rest[1]):
            repo.copies[rel] = size
        else:
            raise _unsafe(m.name, "hard link outside blobs/ and snapshots/")
        repo.same_as[rel] = source

    def finish(self) -> None:
        """Members outside any repo: the folders leading to it, or hub-level files we skip."""
        prefix = self.prefix or ()
        for name, parts, is_dir in self.outside:
            if len(parts) == 0 or (is_dir and tuple(parts) == prefix[:len(parts)]):
                continue
            at_hub = tuple(parts[:len(prefix)]) == prefix and len(parts) > len(prefix)
            rest = parts[len(prefix):] if at_hub else []
            if at_hub and (rest == ["CACHEDIR.TAG"] or rest[0] == ".locks"):
                self.skipped.append(name)
                continue
            raise _unsafe(name, "not inside a models--ORG--NAME folder")
        if not self.repos:
            raise _unsafe(self.path.name, "no models--ORG--NAME folder in the archive")


def _second_layer(m: tarfile.TarInfo) -> None:
    """tarfile's own data filter over a member, where this Python has it: what it refuses is refused."""
    if DATA_FILTER is not None:
        try:
            DATA_FILTER(m, FILTER_ROOT)
        except FILTER_ERROR as exc:
            raise _unsafe(m.name, f"refused by tarfile's data filter ({exc})") from None


def _pinned(m: tarfile.TarInfo, rest: list[str]) -> bool:
    """A blob file (``blobs/<hash>``) or a snapshot link: the two shapes of nearly every member, whose
    every part the cache's grammar fixes (`_classify` refuses any other target than ``blobs/<hash>``
    of the same repo), so tarfile's data filter has nothing left to refuse in them (a property test
    holds this). They skip it: its 2 or 3 `realpath` walks, one `lstat` per path component, were a
    third of the scan of a revision of many small files."""
    if m.isreg():
        return len(rest) == 2 and rest[0] == "blobs" and bool(BLOB_RE.match(rest[1]))
    return m.issym() and len(rest) >= 3 and rest[0] == "snapshots"


def within(path: Path, m: tarfile.TarInfo, bounds: Bounds | None, physical: int | None) -> None:
    """A member's header within what the archive can hold (`physical`: an uncompressed archive's
    size) and what was declared (`bounds`): checked before tarfile skips past its data."""
    end = m.offset_data + m.size
    if m.issparse() or (m.pax_headers and any(k.startswith("GNU.sparse") for k in m.pax_headers)):
        raise _unsafe(m.name, "a sparse file is not allowed")  # its size is another's
    if m.size < 0:
        raise _unsafe(m.name, f"a negative size ({m.size})")
    if physical is not None and end > physical:
        raise _damaged(path, f"archive ends inside {m.name} (cut short)")
    if bounds is not None and m.size > bounds.member:
        raise UnsafeArchiveError(f"unsafe archive member {m.name!r}: its header claims {m.size} bytes, more "
                                 f"than any member may hold ({bounds.member}: {bounds.why})", BOUND_HINT)
    if bounds is not None and end > bounds.total:
        raise UnsafeArchiveError(f"{path.name}: member {m.name!r} claims {m.size} bytes, past the "
                                 f"{bounds.total} bytes of tar data it may hold ({bounds.why})", BOUND_HINT)


def scan_archive(path: Path, bounds: Bounds | None = None) -> ArchiveContents:
    """Validate every member of the archive at `path` without writing anything, reading within
    `bounds` (from `trust.accept`; None: only what the file itself bounds)."""
    try:
        kind = compression_of(path)
        scan = _Scan(path, bounds, path.stat().st_size if kind == "none" else None)
        tar, fobj = open_tar(path, kind, bounds)
        with tar, fobj:
            for m in members(tar):
                scan.member(tar, m)
            check_end(tar, fobj, path)
    except READ_ERRORS as exc:
        if isinstance(exc, OSError) and not isinstance(exc, tarfile.TarError) and exc.errno:
            raise _damaged(path, f"cannot read ({exc.strerror or exc})") from None
        raise _damaged(path, f"not a readable tar archive ({type(exc).__name__}: {exc})") from None
    scan.finish()
    return ArchiveContents(path, "/".join(scan.prefix or ()), kind, scan.repos, scan.data, scan.skipped,
                           bounds)


def _check_type_and_mode(m: tarfile.TarInfo) -> None:
    if m.type in TYPE_NAMES:
        raise _unsafe(m.name, f"{TYPE_NAMES[m.type]} is not allowed")
    if not (m.isreg() or m.isdir() or m.issym()):
        raise _unsafe(m.name, f"member type {m.type!r} is not allowed")
    if not m.issym() and m.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH):
        raise _unsafe(m.name, f"odd mode {oct(m.mode)} (setuid/setgid/sticky/world-writable)")


def _read_small(tar: tarfile.TarFile, m: tarfile.TarInfo, limit: int) -> bytes:
    if m.size > limit:
        raise _unsafe(m.name, f"{m.size} bytes is too large for this kind of file")
    fh = tar.extractfile(m)
    data = fh.read() if fh else b""
    if len(data) != m.size:
        raise CorruptArchiveError(f"{m.name}: truncated member", "the archive is damaged")
    return data


def _valid_dir(rest: list[str]) -> bool:
    if len(rest) <= 1:
        return not rest or rest[0] in ("blobs", "snapshots", "refs", "trees")
    if rest[0] == "snapshots":
        return bool(COMMIT_RE.match(rest[1]))
    return rest[0] == "refs" and bool(REF_NAME_RE.match("/".join(rest[1:])))


def _classify(scan: _Scan, tar: tarfile.TarFile, m: tarfile.TarInfo, repo: RepoPayload,
              rest: list[str]) -> DataMember | None:
    """Place one member of a repo folder into its payload, skip it, or reject it; a member whose
    bytes the restore reads is returned."""
    rel = "/".join(rest)
    area = rest[0] if rest else ""
    if area == ".no_exist" or (area == "blobs" and len(rest) == 2 and rest[1].endswith(".incomplete")
                               and m.isreg()):
        scan.skipped.append(m.name)  # markers of known-missing files; unfinished downloads
        return None
    if m.isdir():
        if not _valid_dir(rest):
            raise _unsafe(m.name, "folder outside the HF cache layout")
        return None
    if area == "blobs":
        if len(rest) != 2 or not BLOB_RE.match(rest[1]):
            raise _unsafe(m.name, "blob name is not a 40/64-hex hash")
        if not m.isreg():
            raise _unsafe(m.name, "a blob must be a regular file, not a link")
        _check_size(scan, m, rest[1], m.size)
        repo.blobs[sys.intern(rest[1])] = m.size  # one string for the name, however many links use it
        scan.data.append(DataMember(m.name, repo.folder, rel, m.size, m.offset_data))
        return scan.data[-1]
    elif area == "snapshots":
        return _snapshot_entry(scan, m, repo, rest, rel)
    elif area == "refs":
        name = "/".join(rest[1:])
        if not m.isreg() or not REF_NAME_RE.match(name):
            raise _unsafe(m.name, "a ref must be a regular file with a plain name")
        commit = _read_small(tar, m, MAX_REF).decode("ascii", "replace").strip()
        if not COMMIT_RE.match(commit):
            raise _unsafe(m.name, "ref does not hold a 40-hex commit")
        repo.refs[name] = commit
    elif area == "trees":
        if len(rest) != 2 or not TREE_NAME_RE.match(rest[1]) or not m.isreg():
            raise _unsafe(m.name, "trees/ holds only <commit>.json files")
        data = _read_small(tar, m, MAX_SMALL)
        try:
            json.loads(data)
        except (ValueError, RecursionError):
            raise _unsafe(m.name, "trees listing is not valid JSON") from None
        repo.trees[rel] = data
    else:
        raise _unsafe(m.name, "file outside the HF cache layout")
    return None


def _check_size(scan: _Scan, m: tarfile.TarInfo, blob: str, size: int) -> None:
    if scan.expected_sizes is None:
        return
    want = scan.expected_sizes.get(blob)
    if want is None:
        raise _unsafe(m.name, "blob is not listed in the manifest")
    if size != want:
        raise _unsafe(m.name, f"{size} bytes, the manifest says {want}")


def _snapshot_entry(scan: _Scan, m: tarfile.TarInfo, repo: RepoPayload, rest: list[str],
                    rel: str) -> DataMember | None:
    if len(rest) < 3 or not COMMIT_RE.match(rest[1]):
        raise _unsafe(m.name, "snapshot entry outside snapshots/<40-hex commit>/")
    if m.isreg():  # a dereferenced backup (tar -h): the bytes are hashed into a blob when read
        repo.copies[rel] = m.size
        scan.data.append(DataMember(m.name, repo.folder, rel, m.size, m.offset_data))
        return scan.data[-1]
    if m.linkname.startswith("/"):
        raise _unsafe(m.name, f"absolute symlink target {m.linkname!r}")
    target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), m.linkname))
    tparts = target.split("/")
    if len(tparts) != 2 or tparts[0] != "blobs" or not BLOB_RE.match(tparts[1]):
        raise _unsafe(m.name, f"symlink target {m.linkname!r} is not a blob of this repo")
    repo.links[rel] = sys.intern(tparts[1])
    return None
