"""The hub cache's grammar: repo folder names, blob names and hashes, link paths, ref names.

One place for every rule of how huggingface_hub names things on disk::

    models--ORG--NAME/blobs/<hash>                       (datasets--ORG--NAME for a dataset)
    models--ORG--NAME/snapshots/<40-hex commit>/<path>  ->  ../../blobs/<hash>  (one more ../ per subfolder)
    models--ORG--NAME/refs/<name>                        holds the commit
    models--ORG--NAME/{.no_exist/<commit>/<path>, trees/<commit>.json}
    models--NAME/...                                     a repo without an org, such as gpt2

A blob's name is its content hash: 64 hex = sha256 (LFS files), 40 hex = git blob sha1
(``b"blob N\\0" + bytes``), so every byte can be checked without the network.

Both ends use it: the client (through `hub.layout`) and the fetch host's agent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

FOLDER_PREFIXES = {"model": "models--", "dataset": "datasets--"}
COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")
SHORT_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}\Z")
BLOB_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
# huggingface_hub's validate_repo_id, part by part: 1 to 96 of [A-Za-z0-9_.-], starting and ending
# with a word character, no "--" (so the folder's separator stays unambiguous) and no ".."
_CHAR = r"(?:[A-Za-z0-9_]|-(?!-)|\.(?!\.))"
_PART = rf"(?!{_CHAR}{{97}})[A-Za-z0-9_](?:{_CHAR}*[A-Za-z0-9_])?"
_NAME = rf"{_PART}(?<!\.git)"  # nor may the id end in .git
FOLDER_PATTERN = rf"(models|datasets)--(?:({_PART})--)?({_NAME})"  # the ORG-- is optional: models--gpt2
FOLDER_RE = re.compile(rf"^{FOLDER_PATTERN}\Z")
REF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}\Z")
REPO_ID_RE = re.compile(rf"^(?:{_PART}/)?{_NAME}\Z")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}\Z")
TREE_NAME_RE = re.compile(r"^[0-9a-f]{40}\.json\Z")
MAX_COMPONENT = 255  # bytes in one path component: NAME_MAX on Linux and macOS
MAX_PATH = 900  # bytes in a path inside a repo folder: inside macOS's PATH_MAX (1024) below a cache


@dataclass(frozen=True)
class FileRecord:
    """One file of a revision: its path in the repo, its blob name, its size in bytes."""

    __slots__ = ("blob", "path", "size")  # a manifest of 100,000 files holds 100,000 (not slots=True: 3.8)
    path: str
    blob: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "blob": self.blob, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRecord:
        return cls(str(d["path"]), str(d["blob"]), int(d["size"]))


def valid_repo_id(repo_id: str) -> bool:
    """ORG/NAME, or a single NAME as some old repos have (``gpt2``): exactly the ids huggingface_hub's
    ``validate_repo_id`` accepts (safe characters only, nothing a shell or a path could misread), each
    of which maps to a cache folder name and back."""
    return bool(REPO_ID_RE.match(repo_id))


def path_problem(path: str) -> str | None:
    """Why `path` (a file of a revision, ``sub/file.txt``) cannot be kept, or None when it can.

    The one rule for names, applied alike by restore, serve and fetch: what a cache holds can be
    written on the user's filesystems and served back over HTTP. Every component non-empty and not
    ``.``/``..``, printable (no control, line or paragraph separator, bidi override or other
    invisible character: ``str.isprintable``), no backslash, at most 255 bytes; the whole at most
    900 bytes."""
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > MAX_PATH:
        return f"a name longer than {MAX_PATH} bytes"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "a path with '..', '.' or empty components"
    if any(not p.isprintable() or "\\" in p for p in parts):
        return "a control, invisible or separator character, or a backslash, in the name"
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT for p in parts):
        return f"a path component longer than {MAX_COMPONENT} bytes"
    return None


def valid_revision(revision: str) -> bool:
    """A branch, tag or commit with safe characters only."""
    return bool(REVISION_RE.match(revision)) and ".." not in revision


def repo_folder_name(repo_id: str, repo_type: str = "model") -> str:
    """``ORG/NAME`` -> ``models--ORG--NAME`` (``datasets--ORG--NAME`` for a dataset; ``gpt2`` ->
    ``models--gpt2``)."""
    return FOLDER_PREFIXES[repo_type] + repo_id.replace("/", "--")


def repo_id_from_folder(folder: str) -> str | None:
    """``models--ORG--NAME`` -> ``ORG/NAME`` (``models--gpt2`` -> ``gpt2``); None for anything else."""
    m = FOLDER_RE.match(folder)
    if not m:
        return None
    return f"{m.group(2)}/{m.group(3)}" if m.group(2) else m.group(3)


def repo_type_from_folder(folder: str) -> str:
    """``models--…`` -> model, ``datasets--…`` -> dataset."""
    return "dataset" if folder.startswith(FOLDER_PREFIXES["dataset"]) else "model"


def is_repo_folder_name(part: str) -> bool:
    """A path part that starts a repo folder (models--…, datasets--…)."""
    return part.startswith(tuple(FOLDER_PREFIXES.values()))


def archive_name(repo_id: str, commit: str, suffix: str = ".tar", repo_type: str = "model",
                 include: Iterable[str] = (), exclude: Iterable[str] = ()) -> str:
    """``models--ORG--NAME--<commit12>.tar``: one backup file per repo revision; a download
    filtered by --include/--exclude is another backup, ``...--<commit12>.only-<8 hex>.tar``, so
    that it never takes the place of the whole revision's."""
    base = f"{repo_folder_name(repo_id, repo_type)}--{commit[:12]}"
    include, exclude = sorted(include), sorted(exclude)
    if include or exclude:
        key = json.dumps([include, exclude]).encode()
        base += ".only-" + hashlib.sha256(key).hexdigest()[:8]
    return base + suffix


def snapshot_link(path: str, blob: str) -> str:
    """The relative link target of ``snapshots/<commit>/<path>``: ``../../blobs/<blob>`` and one
    more ``../`` per subfolder of `path`."""
    return "../" * (path.count("/") + 2) + f"blobs/{blob}"


class BlobHasher(Protocol):
    """What hashes a blob: hashlib's sha256 and sha1 objects."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


def _git_sha1() -> BlobHasher:
    """sha1 for git blob names (not for security: FIPS builds need it said; Python 3.8, which hosts
    still run, has no such argument)."""
    try:
        return hashlib.sha1(usedforsecurity=False)
    except TypeError:
        return hashlib.sha1()


def git_object_hasher(kind: str, size: int) -> BlobHasher:
    """A hash object that, fed a git object's `size` bytes, yields its id: sha1 of
    ``KIND SIZE\\0`` and the bytes (a ``blob``'s name, a ``tree``'s id)."""
    h = _git_sha1()
    h.update(kind.encode() + b" %d\0" % size)
    return h


def blob_hasher(name: str, size: int) -> BlobHasher:
    """A hash object that, fed a blob's bytes, yields `name` when the bytes are right."""
    if len(name) == 64:
        return hashlib.sha256()
    return git_object_hasher("blob", size)


def blob_name(data: bytes, lfs: bool) -> str:
    """The blob name huggingface_hub gives these bytes: sha256 for LFS files, else git sha1."""
    h = blob_hasher("0" * (64 if lfs else 40), len(data))
    h.update(data)
    return h.hexdigest()
