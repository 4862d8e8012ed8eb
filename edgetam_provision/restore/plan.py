"""What a restore does, as data: one `Action` per entry written or found, per archive, per run.

Built by `run` after every byte was read (`read`), executed by `publish`; `--dry-run` and
`provision check` render it without executing it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..archive.contents import ArchiveContents
from ..hub.layout import repo_id_from_folder, repo_type_from_folder


@dataclass(frozen=True, slots=True)
class Action:
    """One entry a restore writes or finds in place.

    kind: blob | link | tree | ref. state: new | present | repair | update | kept.
    """

    kind: str
    folder: str
    path: str
    state: str
    size: int = 0
    blob: str | None = None  # link: the blob it points at
    commit: str | None = None  # ref: the commit it points at after the restore
    previous: str | None = None  # ref: the commit it pointed at before (update, kept)

    def to_dict(self) -> dict[str, object]:
        repo_id, repo_type = _repo_of(self.folder)
        d: dict[str, object] = {"kind": self.kind, "repo_id": repo_id, "repo_type": repo_type,
                                "path": self.path, "state": self.state, "size": self.size}
        for k, v in (("blob", self.blob), ("commit", self.commit), ("previous", self.previous)):
            if v:
                d[k] = v
        return d

    @property
    def writes(self) -> bool:
        return self.state in ("new", "repair", "update")


@functools.lru_cache(maxsize=64)
def _repo_of(folder: str) -> tuple[str | None, str]:
    """A repo folder's id and type, worked out once for all the entries of its repo."""
    return repo_id_from_folder(folder), repo_type_from_folder(folder)


@dataclass(frozen=True)
class ArchivePlan:
    """One archive, checked byte for byte, and what restoring it does: what it reports and writes,
    not every member it held (`of` takes that from its contents, which can then be let go)."""

    archive: Path
    commits: dict[str, tuple[str, ...]]  # repo folder -> the commits it holds files of
    checked_by: str  # manifest | SHA256SUMS | blob names
    actions: tuple[Action, ...]
    skipped: tuple[str, ...] = ()  # members not restored (.locks/, CACHEDIR.TAG, .no_exist/, *.incomplete)
    unused: tuple[str, ...] = ()  # blobs of a hand-made backup that no snapshot file uses: not kept
    trees: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (folder, trees/<c>.json) -> bytes

    @classmethod
    def of(cls, contents: ArchiveContents, checked_by: str, actions: tuple[Action, ...],
           unused: tuple[str, ...]) -> ArchivePlan:
        return cls(contents.path, {f: tuple(sorted(r.commits)) for f, r in contents.repos.items()},
                   checked_by, actions, tuple(contents.skipped), unused,
                   {(f, rel): data for f, r in contents.repos.items() for rel, data in r.trees.items()})

    @functools.cached_property
    def writes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.writes)

    @functools.cached_property
    def blobs(self) -> tuple[Action, ...]:
        """The blobs it writes (new or repaired)."""
        return tuple(a for a in self.writes if a.kind == "blob")

    @property
    def moved_refs(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.kind == "ref" and a.previous)

    def status(self, written: bool = True) -> str:
        if any(a.state == "repair" for a in self.blobs):
            return "repaired" if written else "would repair"
        return ("restored" if written else "would restore") if self.writes else "already present"

    def summary(self, written: bool = True) -> dict[str, object]:
        writes, blobs = self.writes, self.blobs
        return {"archive": str(self.archive), "checked_by": self.checked_by,
                "repos": [{"repo_id": repo_id_from_folder(f), "commits": list(c)}
                          for f, c in self.commits.items()],
                "new_blobs": sum(a.state == "new" for a in blobs),
                "repaired_blobs": sum(a.state == "repair" for a in blobs),
                "new_bytes": sum(a.size for a in blobs),
                "writes": len(writes),
                "status": self.status(written),
                "moved_refs": [a.to_dict() for a in self.moved_refs],
                "skipped": [*self.skipped, *self.unused],
                "actions": [a.to_dict() for a in writes]}


def nothing_staged(_folder: str, _blob: str) -> None:
    """`RestorePlan.staged_file` of a plan that stages nothing (a dry run; one already published)."""
    return None


def no_folder_staged(_folder: str) -> None:
    """`RestorePlan.staged_folder` of a plan that stages nothing."""
    return None


@dataclass(frozen=True)
class RestorePlan:
    cache: Path
    archives: tuple[ArchivePlan, ...]
    ignored: tuple[str, ...] = field(default=())  # paths given that are not archives
    #: (folder, blob) -> the file its bytes wait in to be published (None: not staged)
    staged_file: Callable[[str, str], str | None] = field(default=nothing_staged, repr=False, compare=False)
    #: folder -> where a repo folder the cache lacks is being built whole (None: entry by entry)
    staged_folder: Callable[[str], str | None] = field(default=no_folder_staged, repr=False, compare=False)

    @functools.cached_property
    def writes(self) -> tuple[Action, ...]:
        return tuple(a for p in self.archives for a in p.actions if a.writes)

    def as_returned(self, ignored: list[str]) -> RestorePlan:
        """The plan for the caller: the paths that were no archives, and the staging (gone or never
        made by then) let go, with the read pass it points into."""
        return replace(self, ignored=tuple(ignored), staged_file=nothing_staged,
                       staged_folder=no_folder_staged)

    def to_dict(self, written: bool = True) -> dict[str, object]:
        """What the run did (`written`), or would do (a dry run, a check)."""
        return {"cache": str(self.cache), "archives": [p.summary(written) for p in self.archives],
                "writes": len(self.writes), "ignored": list(self.ignored)}
