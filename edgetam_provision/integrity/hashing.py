"""Hashing bytes against their names: a file's sha256, a blob against its blob name, git ids.

One read loop (`hash_file`) with one buffer size (`fsutil.CHUNK`), over regular files only
(`fsutil.open_regular`: a FIFO, socket or device is an OSError, never a read that blocks). What a
name means is the cache's grammar, defined once in `remote.layout` (the fetch host hashes with
the same definitions): 64 hex = sha256, 40 hex = git sha1 of ``blob SIZE\\0`` and the bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..fsutil import CHUNK, open_regular
from ..remote.layout import BlobHasher, blob_hasher, git_object_hasher

__all__ = ["BlobHasher", "blob_hasher", "blob_matches", "blob_names", "git_tree_id", "hash_file",
           "sha256_file"]


def hash_file(path: Path, *hashers: BlobHasher) -> int:
    """Feed the file's bytes, read once, to every hasher; the number of bytes read. A regular file
    only (OSError else)."""
    read = 0
    with open_regular(path) as fh:
        while chunk := fh.read(CHUNK):
            read += len(chunk)
            for h in hashers:
                h.update(chunk)
    return read


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    hash_file(path, h)
    return h.hexdigest()


def blob_matches(path: Path, name: str) -> bool:
    """True when the file's bytes hash to its blob name (sha256 or git sha1, as the name's length says)."""
    h = blob_hasher(name, path.stat().st_size)
    hash_file(path, h)
    return h.hexdigest() == name


def blob_names(path: Path) -> tuple[str, str]:
    """The two names a file's bytes could have as a blob, read once: (sha256, git sha1)."""
    size = path.stat().st_size
    lfs, git = blob_hasher("0" * 64, size), blob_hasher("0" * 40, size)
    hash_file(path, lfs, git)
    return lfs.hexdigest(), git.hexdigest()


def git_tree_id(body: bytes) -> str:
    """The id git gives a tree whose entries (``MODE NAME\\0`` + 20-byte id each, sorted) are `body`."""
    h = git_object_hasher("tree", len(body))
    h.update(body)
    return h.hexdigest()
