"""The hub cache's grammar: repo folder names, blob names and hashes, link paths, ref names.

Defined once in `remote.layout`, which the fetch host's agent runs too; this is its name on the
client's side of the house, where the rest of the cache lives.
"""

from __future__ import annotations

from ..remote.layout import (
    BLOB_RE,
    COMMIT_RE,
    FOLDER_PATTERN,
    FOLDER_PREFIXES,
    FOLDER_RE,
    MAX_COMPONENT,
    MAX_PATH,
    REF_NAME_RE,
    REPO_ID_RE,
    REVISION_RE,
    SHORT_COMMIT_RE,
    TREE_NAME_RE,
    BlobHasher,
    FileRecord,
    archive_name,
    blob_hasher,
    blob_name,
    is_repo_folder_name,
    path_problem,
    repo_folder_name,
    repo_id_from_folder,
    repo_type_from_folder,
    snapshot_link,
    valid_repo_id,
    valid_revision,
)

__all__ = [
    "BLOB_RE", "COMMIT_RE", "FOLDER_PATTERN", "FOLDER_PREFIXES", "FOLDER_RE", "MAX_COMPONENT", "MAX_PATH",
    "REF_NAME_RE", "REPO_ID_RE", "REVISION_RE", "SHORT_COMMIT_RE", "TREE_NAME_RE", "BlobHasher",
    "FileRecord",
    "archive_name", "blob_hasher", "blob_name", "is_repo_folder_name", "path_problem", "repo_folder_name",
    "repo_id_from_folder", "repo_type_from_folder", "snapshot_link", "valid_repo_id", "valid_revision",
]
