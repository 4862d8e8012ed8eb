"""What a validated archive holds: its repos' payloads and the members whose bytes a restore reads.

Made by `untrusted.scan_archive`, which checks every member first; read by the acceptance rule
(`trust.accept`), the restore's plan and its read pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .tar_io import Bounds


@dataclass
class RepoPayload:
    """What an archive holds for one repo folder."""

    folder: str
    blobs: dict[str, int] = field(default_factory=dict)  # blob name -> size
    links: dict[str, str] = field(default_factory=dict)  # "snapshots/<c>/<path>" -> blob name
    copies: dict[str, int] = field(default_factory=dict)  # "snapshots/<c>/<path>" -> size (tar -h)
    same_as: dict[str, str] = field(default_factory=dict)  # hard link (tar -h) -> the member it repeats
    refs: dict[str, str] = field(default_factory=dict)  # ref name -> commit
    trees: dict[str, bytes] = field(default_factory=dict)  # "trees/<c>.json" -> bytes

    @property
    def commits(self) -> set[str]:
        """The commits this archive holds files of (bare folders do not count)."""
        return {p.split("/")[1] for p in (*self.links, *self.copies)}


@dataclass(frozen=True, slots=True)
class DataMember:
    """A member whose bytes the restore reads: a blob, or a plain snapshot file (tar -h)."""

    name: str
    folder: str
    path: str  # "blobs/<name>" or "snapshots/<c>/<path>"
    size: int
    offset: int  # of its data, in the uncompressed tar stream


@dataclass
class ArchiveContents:
    """The validated content of one archive."""

    path: Path
    prefix: str
    compression: str
    repos: dict[str, RepoPayload]
    data: list[DataMember]
    skipped: list[str]  # member names not restored (.locks/, CACHEDIR.TAG, .no_exist/, *.incomplete)
    bounds: Bounds | None = None  # what it was read within (again when its data is read)
