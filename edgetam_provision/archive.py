"""Pack a cached repo revision into a tar; read any archive as hostile input.

Packing writes ``models--ORG--NAME/`` with blobs as regular files (real bytes, also for hub 2.x
shared-blob-store links), snapshot entries as relative symlinks, the refs and the trees listing.

Reading never lets tarfile write anything. `scan_archive` checks every member against the HF
cache layout *before* a single byte is written (path escapes, links, devices, modes, duplicates,
refs...), and also runs tarfile's ``data`` filter over each member as a second layer.
`iter_blobs` then streams the blob bytes for the caller to stage and hash.

This module uses only the standard library: `provision fetch` ships it to the remote host.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import re
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

try:
    from .errors import CorruptArchiveError, UnsafeArchiveError, UsageError
except ImportError:  # shipped alone to a remote host by `provision fetch`
    class _Err(Exception):
        def __init__(self, message: str, hint: str = "") -> None:
            super().__init__(message)
            self.message, self.hint = message, hint

    CorruptArchiveError = UnsafeArchiveError = UsageError = _Err  # type: ignore[misc,assignment]

# The names of the hub cache, in one place (this module also travels to the fetch host).
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
BLOB_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
FOLDER_RE = re.compile(r"^models--([A-Za-z0-9][A-Za-z0-9._-]*)--([A-Za-z0-9][A-Za-z0-9._-]*)$")
REF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")

PREFIXES = ((), ("hub",), ("huggingface", "hub"), (".cache", "huggingface", "hub"))
SUFFIX = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
MAX_SMALL = 64 * 1024 * 1024  # refs, trees listings: read into memory, so bounded
PACK_MTIME = 1_735_689_600  # fixed (2025-01-01): a revision packs to the same bytes, so pulls resume
UNSAFE_HINT = "this archive is not a Hugging Face cache backup; nothing was written"
TYPE_NAMES = {tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
              tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO",
              tarfile.CONTTYPE: "a contiguous file"}


def valid_repo_id(repo_id: str) -> bool:
    """ORG/NAME with safe characters only: nothing a shell or a path could misread."""
    return bool(REPO_ID_RE.match(repo_id)) and ".." not in repo_id and "--" not in repo_id


def valid_revision(revision: str) -> bool:
    """A branch, tag or commit with safe characters only."""
    return bool(REVISION_RE.match(revision)) and ".." not in revision


# ---------------------------------------------------------------------------- packing

class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        import hashlib

        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def _compressor(raw: BinaryIO, compression: str) -> BinaryIO:
    if compression == "none":
        return raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)  # type: ignore[return-value]
    return _zstd_module().ZstdCompressor(level=3).stream_writer(raw, closefd=False)


def _zstd_module():
    try:
        import zstandard
    except ImportError:
        raise UsageError("zstd needs the 'zstandard' package",
                         "pip install 'edgetam-provision[zstd]', or use --compress gzip/none") from None
    return zstandard


@dataclass(frozen=True)
class PackedFile:
    """One snapshot file as packed: path in the repo, blob name, size."""

    path: str
    blob: str
    size: int


def pack_repo(cache: Path, folder: str, commit: str, out: BinaryIO, compression: str = "none",
              entries: dict[str, str] | None = None) -> tuple[str, int, list[PackedFile], list[str]]:
    """Write one revision of ``cache/folder`` as a tar into `out`.

    `entries` maps snapshot paths to blob names (from the integrity check; needed for caches that
    hold copies instead of links); by default the snapshot's links are read. Returns (archive
    sha256, archive size, files, ref names). Blobs are read through any shared-blob-store link,
    so the archive always carries real bytes, and snapshot entries are always written as links.
    """
    repo = cache / folder
    snap = repo / "snapshots" / commit
    hasher = HashingWriter(out)
    stream = _compressor(hasher, compression)  # type: ignore[arg-type]
    now = PACK_MTIME
    files: list[PackedFile] = []
    refs = sorted(p.relative_to(repo / "refs").as_posix() for p in (repo / "refs").rglob("*")
                  if p.is_file() and p.read_text().strip() == commit) if (repo / "refs").is_dir() else []

    def info(name: str, kind: bytes, size: int = 0, link: str = "") -> tarfile.TarInfo:
        ti = tarfile.TarInfo(f"{folder}/{name}" if name else folder)
        ti.type, ti.size, ti.linkname, ti.mtime = kind, size, link, now
        ti.mode = 0o755 if kind in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644
        return ti

    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        dirs = ["", "blobs", "refs", "snapshots", f"snapshots/{commit}"]
        for d in dirs:
            tar.addfile(info(d, tarfile.DIRTYPE))
        links: list[tuple[str, str]] = []
        for entry in sorted(snap.rglob("*")):
            rel = entry.relative_to(snap).as_posix()
            if entry.is_dir() and not entry.is_symlink():
                tar.addfile(info(f"snapshots/{commit}/{rel}", tarfile.DIRTYPE))
                continue
            blob = entries[rel] if entries is not None else posixpath.basename(os.readlink(entry))
            links.append((rel, blob))
        seen: set[str] = set()
        for rel, blob in links:
            src = (repo / "blobs" / blob).resolve()
            size = src.stat().st_size
            files.append(PackedFile(rel, blob, size))
            if blob in seen:
                continue
            seen.add(blob)
            with open(src, "rb") as fh:
                tar.addfile(info(f"blobs/{blob}", tarfile.REGTYPE, size), fh)
        for rel, blob in links:
            up = "../" * (rel.count("/") + 2)
            tar.addfile(info(f"snapshots/{commit}/{rel}", tarfile.SYMTYPE, link=f"{up}blobs/{blob}"))
        tree = repo / "trees" / f"{commit}.json"
        if tree.is_file():
            tar.addfile(info("trees", tarfile.DIRTYPE))
            data = tree.read_bytes()
            tar.addfile(info(f"trees/{commit}.json", tarfile.REGTYPE, len(data)), io.BytesIO(data))
        no_exist = repo / ".no_exist" / commit
        if no_exist.is_dir():
            tar.addfile(info(".no_exist", tarfile.DIRTYPE))
            tar.addfile(info(f".no_exist/{commit}", tarfile.DIRTYPE))
            for p in sorted(no_exist.rglob("*")):
                rel = f".no_exist/{commit}/{p.relative_to(no_exist).as_posix()}"
                kind = tarfile.DIRTYPE if p.is_dir() else tarfile.REGTYPE
                tar.addfile(info(rel, kind), None if kind == tarfile.DIRTYPE else io.BytesIO(b""))
        for ref in refs:
            parts = ref.split("/")
            for i in range(1, len(parts)):
                tar.addfile(info("refs/" + "/".join(parts[:i]), tarfile.DIRTYPE))
            tar.addfile(info(f"refs/{ref}", tarfile.REGTYPE, 40), io.BytesIO(commit.encode()))
    if stream is not hasher:
        stream.close()
    return hasher.sha256.hexdigest(), hasher.size, files, refs


# ---------------------------------------------------------------------------- reading

def compression_of(path: Path) -> str:
    """none, gzip or zstd: by the file's magic bytes, not its name."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    return "gzip" if magic[:2] == b"\x1f\x8b" else "zstd" if magic == b"\x28\xb5\x2f\xfd" else "none"


def open_archive(path: Path) -> tarfile.TarFile:
    """Open a tar, .tar.gz or .tar.zst for reading."""
    try:
        kind = compression_of(path)
        if kind == "gzip":
            return tarfile.open(path, mode="r:gz")
        if kind == "zstd":
            raw = _zstd_module().ZstdDecompressor().stream_reader(open(path, "rb"))  # noqa: SIM115 - closed with the tar
            return tarfile.open(fileobj=raw, mode="r|")
        return tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise CorruptArchiveError(f"{path.name}: not a readable tar archive ({exc})",
                                  "the file is damaged or not a backup; fetch or copy it again") from None


@dataclass
class RepoPayload:
    """What an archive holds for one repo folder."""

    folder: str
    blobs: dict[str, int] = field(default_factory=dict)  # blob name -> size
    links: dict[str, str] = field(default_factory=dict)  # "snapshots/<c>/<path>" -> blob name
    dirs: set[str] = field(default_factory=set)
    refs: dict[str, str] = field(default_factory=dict)  # ref name -> commit
    small_files: dict[str, bytes] = field(default_factory=dict)  # trees/, .no_exist/ -> bytes

    @property
    def commits(self) -> set[str]:
        return {p.split("/")[1] for p in self.links} | {
            d.split("/")[1] for d in self.dirs if d.startswith("snapshots/") and d.count("/") >= 1}


@dataclass
class ArchiveContents:
    """The validated content of one archive: member names by repo, and the prefix they share."""

    path: Path
    prefix: str
    repos: dict[str, RepoPayload]
    blob_members: dict[str, tuple[str, str]]  # member name -> (folder, blob)
    blob_offsets: dict[str, int]  # member name -> offset of its data (uncompressed archives)
    compression: str


def _unsafe(member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"unsafe archive member {member!r}: {why}", UNSAFE_HINT)


def _split_name(raw: str) -> list[str]:
    """Lexically check a member name and split it; reject anything that could escape."""
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in raw):
        raise _unsafe(raw, "control character or backslash in the name")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise _unsafe(raw, "absolute path")
    name = raw[2:] if raw.startswith("./") else raw
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _unsafe(raw, "path with '..', '.' or empty components")
    return parts


def scan_archive(path: Path, cache_has_blob: Callable[[str, str], bool],
                 expected_sizes: dict[str, int] | None = None) -> ArchiveContents:
    """Validate every member of the archive at `path` without writing anything.

    `cache_has_blob(folder, blob)` says whether the cache already holds a blob, so a snapshot link
    may point at it. `expected_sizes` (blob -> size, from a manifest) bounds every blob.
    """
    repos: dict[str, RepoPayload] = {}
    blob_members: dict[str, tuple[str, str]] = {}
    blob_offsets: dict[str, int] = {}
    seen: set[str] = set()
    link_members: set[str] = set()
    prefix: tuple[str, ...] | None = None
    filter_root = "/nonexistent-provision-filter-root"
    try:
        with open_archive(path) as tar:
            for m in tar:
                parts = _split_name(m.name)
                key = "/".join(parts)
                if key in seen:
                    raise _unsafe(m.name, "duplicate member name")
                seen.add(key)
                if any("/".join(parts[:i]) in link_members for i in range(1, len(parts))):
                    raise _unsafe(m.name, "member below a symbolic link")
                if m.issym() or m.islnk():
                    link_members.add(key)
                _check_type_and_mode(m)
                idx = next((i for i, p in enumerate(parts) if p.startswith("models--")), None)
                if idx is None:
                    if m.isdir() and any(tuple(parts) == pre[:len(parts)] for pre in PREFIXES):
                        continue
                    raise _unsafe(m.name, "not inside a models--ORG--NAME folder")
                if prefix is None:
                    prefix = tuple(parts[:idx])
                    if prefix not in PREFIXES:
                        raise _unsafe(m.name, "unexpected leading folders")
                elif tuple(parts[:idx]) != prefix:
                    raise _unsafe(m.name, "members disagree on their leading folders")
                folder, rest = parts[idx], parts[idx + 1:]
                if not FOLDER_RE.match(folder):
                    raise _unsafe(m.name, "not a valid models--ORG--NAME folder name")
                repo = repos.setdefault(folder, RepoPayload(folder))
                _classify(tar, m, repo, rest, expected_sizes)
                try:  # second layer: what tarfile itself would refuse
                    tarfile.data_filter(m, filter_root)
                except tarfile.FilterError as exc:
                    raise _unsafe(m.name, f"refused by tarfile's data filter ({exc})") from None
                if rest and rest[0] == "blobs" and len(rest) == 2:
                    blob_members[m.name] = (folder, rest[1])
                    blob_offsets[m.name] = m.offset_data
            _check_end(tar)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorruptArchiveError(f"{path.name}: damaged archive ({exc})",
                                  "fetch or copy the backup again; nothing was written") from None
    except OSError as exc:
        raise CorruptArchiveError(f"{path.name}: cannot read ({exc.strerror or exc})",
                                  "check the file; nothing was written") from None
    if not repos:
        raise _unsafe(path.name, "no models--ORG--NAME folder in the archive")
    for folder, repo in repos.items():
        _check_references(folder, repo, cache_has_blob)
    return ArchiveContents(path, "/".join(prefix or ()), repos, blob_members, blob_offsets,
                           compression_of(path))


def _check_end(tar: tarfile.TarFile) -> None:
    """tarfile stops quietly at a damaged header: insist that only zero padding follows.

    Reading to the very end also makes gzip check its CRC.
    """
    fobj = tar.fileobj
    if hasattr(fobj, "seekable") and fobj.seekable():
        fobj.seek(tar.offset)
    while chunk := fobj.read(1024 * 1024):
        if chunk.strip(b"\0"):
            name = os.path.basename(str(tar.name or "archive"))
            raise CorruptArchiveError(f"{name}: unreadable data at offset {tar.offset} "
                                      "(damaged archive)",
                                      "fetch or copy the backup again; nothing was written")


def _check_type_and_mode(m: tarfile.TarInfo) -> None:
    if m.type in TYPE_NAMES:
        raise _unsafe(m.name, f"{TYPE_NAMES[m.type]} is not allowed")
    if m.issparse():
        raise _unsafe(m.name, "a sparse file is not allowed")
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


def _classify(tar: tarfile.TarFile, m: tarfile.TarInfo, repo: RepoPayload, rest: list[str],
              expected_sizes: dict[str, int] | None) -> None:
    """Place one member into the repo payload, or reject it."""
    rel = "/".join(rest)
    if m.isdir():
        ok = ((len(rest) <= 1 and (not rest or rest[0] in ("blobs", "snapshots", "refs",
                                                          ".no_exist", "trees")))
              or (rest[0] in ("snapshots", ".no_exist") and COMMIT_RE.match(rest[1]))
              or (rest[0] == "refs" and REF_NAME_RE.match("/".join(rest[1:]))))
        if not ok:
            raise _unsafe(m.name, "folder outside the HF cache layout")
        repo.dirs.add(rel)
        return
    area = rest[0] if rest else ""
    if area == "blobs":
        if len(rest) != 2 or not BLOB_RE.match(rest[1]):
            raise _unsafe(m.name, "blob name is not a 40/64-hex hash")
        if not m.isreg():
            raise _unsafe(m.name, "a blob must be a regular file, not a link")
        if expected_sizes is not None:
            want = expected_sizes.get(rest[1])
            if want is None:
                raise _unsafe(m.name, "blob is not listed in the manifest")
            if m.size != want:
                raise _unsafe(m.name, f"{m.size} bytes, the manifest says {want}")
        repo.blobs[rest[1]] = m.size
    elif area == "snapshots":
        if len(rest) < 3 or not COMMIT_RE.match(rest[1]):
            raise _unsafe(m.name, "snapshot entry outside snapshots/<40-hex commit>/")
        if not m.issym():
            raise _unsafe(m.name, "snapshot entry is not a symlink to a blob")
        if m.linkname.startswith("/"):
            raise _unsafe(m.name, f"absolute symlink target {m.linkname!r}")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), m.linkname))
        tparts = target.split("/")
        if len(tparts) != 2 or tparts[0] != "blobs" or not BLOB_RE.match(tparts[1]):
            raise _unsafe(m.name, f"symlink target {m.linkname!r} is not a blob of this repo")
        repo.links[rel] = tparts[1]
    elif area == "refs":
        name = "/".join(rest[1:])
        if not m.isreg() or not REF_NAME_RE.match(name):
            raise _unsafe(m.name, "a ref must be a regular file with a plain name")
        commit = _read_small(tar, m, 256).decode("ascii", "replace").strip()
        if not COMMIT_RE.match(commit):
            raise _unsafe(m.name, "ref does not hold a 40-hex commit")
        repo.refs[name] = commit
    elif area == ".no_exist":
        if len(rest) < 3 or not COMMIT_RE.match(rest[1]) or not m.isreg() or m.size:
            raise _unsafe(m.name, ".no_exist entries must be empty files under a commit")
        repo.small_files[rel] = b""
    elif area == "trees":
        if len(rest) != 2 or not re.match(r"^[0-9a-f]{40}\.json$", rest[1]) or not m.isreg():
            raise _unsafe(m.name, "trees/ holds only <commit>.json files")
        data = _read_small(tar, m, MAX_SMALL)
        try:
            json.loads(data)
        except ValueError:
            raise _unsafe(m.name, "trees listing is not valid JSON") from None
        repo.small_files[rel] = data
    else:
        raise _unsafe(m.name, "file outside the HF cache layout")


def _check_references(folder: str, repo: RepoPayload,
                      cache_has_blob: Callable[[str, str], bool]) -> None:
    for rel, blob in repo.links.items():
        if blob not in repo.blobs and not cache_has_blob(folder, blob):
            raise _unsafe(f"{folder}/{rel}", f"links to blob {blob}, which is neither in the "
                                             "archive nor in the cache")
    commits = repo.commits
    if not commits:
        raise _unsafe(folder, "holds no snapshot")
    for name, commit in repo.refs.items():
        if commit not in commits:
            raise _unsafe(f"{folder}/refs/{name}", f"points to {commit}, which has no snapshot here")


class _Slice(io.RawIOBase):
    """`size` bytes of `fh` from its current position: a blob inside an uncompressed tar."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.left = fh, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        view = memoryview(buffer)[: min(len(buffer), self.left)]
        got = self.fh.readinto(view) if len(view) else 0
        if len(view) and not got:
            raise CorruptArchiveError("archive ends inside a blob", "the archive is damaged")
        self.left -= got
        return got


def iter_blobs(contents: ArchiveContents) -> Iterator[tuple[str, str, int, BinaryIO]]:
    """Yield (folder, blob, size, stream) for each blob member, in archive order.

    Uncompressed archives are read directly at the offsets `scan_archive` recorded (no tarfile
    machinery on the hot path); compressed ones stream through tarfile.
    """
    try:
        if contents.compression == "none":
            with open(contents.path, "rb", buffering=0) as fh:
                for name, offset in sorted(contents.blob_offsets.items(), key=lambda kv: kv[1]):
                    folder, blob = contents.blob_members[name]
                    size = contents.repos[folder].blobs[blob]
                    fh.seek(offset)
                    yield folder, blob, size, _Slice(fh, size)  # type: ignore[misc]
            return
        with open_archive(contents.path) as tar:
            for m in tar:
                where = contents.blob_members.get(m.name)
                if where is None:
                    continue
                fh = tar.extractfile(m)
                if fh is None:  # pragma: no cover - scan_archive admitted only regular files
                    raise CorruptArchiveError(f"{m.name}: unreadable", "the archive is damaged")
                yield where[0], where[1], m.size, fh
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorruptArchiveError(f"{contents.path.name}: damaged archive ({exc})",
                                  "fetch or copy the backup again; nothing was published") from None
