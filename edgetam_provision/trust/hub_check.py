"""An archive's manifest entry against the Hub's listing of its revision, file by file.

Exact: the commit the revision names, the set of paths, and each file's size and blob name (the
LFS sha256 for an LFS file, the git blob id for any other). What the archive holds is checked
against its entry elsewhere (every byte hashed against its blob name); this closes the chain from
the bytes to the Hub. An LFS file's own git id is its pointer's, which no archive carries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..console import counted
from ..errors import IntegrityError
from ..hub.manifest import ArchiveEntry, HubCheck, read_manifest
from .hub_listing import HubListing, RevisionUnknown, Unavailable, ask_listing


@dataclass(frozen=True)
class Disagreement:
    """One point where the archive's word and the Hub's differ: a file's path, or ``commit``."""

    path: str
    archive: str  # what the archive says
    hub: str  # what the Hub's listing says


def _file(blob: str, size: int) -> str:
    return f"blob {blob} ({size} bytes)"


def disagreements(entry: ArchiveEntry, listing: HubListing, exact: bool = True) -> list[Disagreement]:
    """Every difference between `entry` and `listing`; empty when they agree. Not `exact` (a
    filtered backup whose patterns are not known): only the files the archive holds are compared."""
    out: list[Disagreement] = []
    if entry.commit != listing.commit:
        out.append(Disagreement("commit", entry.commit, f"{listing.commit} ({listing.revision})"))
    held = {f.path: f for f in entry.files}
    for path in sorted(set(held) | (set(listing.files) if exact else set())):
        mine, hubs = held.get(path), listing.files.get(path)
        if mine is None and hubs is not None:
            out.append(Disagreement(path, "no such file", _file(hubs.blob, hubs.size)))
        elif mine is not None and hubs is None:
            out.append(Disagreement(path, _file(mine.blob, mine.size), "no such file"))
        elif mine is not None and hubs is not None and (mine.blob, mine.size) != (hubs.blob, hubs.size):
            out.append(Disagreement(path, _file(mine.blob, mine.size), _file(hubs.blob, hubs.size)))
    return out


def check_entry(entry: ArchiveEntry, endpoint: str, revision: str, *, include: Iterable[str] = (),
                exclude: Iterable[str] = (), exact: bool = True, token: str | None = None,
                who: str = "the host", hint: str = "") -> HubCheck:
    """Ask the listing and compare: a `HubCheck` that says checked (N files) or why not; a
    disagreement is an `IntegrityError` naming the file, `who`'s word and the Hub's side by side."""
    at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    try:
        listing = ask_listing(endpoint, entry.repo_id, revision, entry.repo_type, token)
    except Unavailable as why:
        return HubCheck(endpoint, at, skipped=str(why))
    except RevisionUnknown:
        found = [Disagreement("commit", entry.commit, f"no revision {revision!r} of {entry.repo_id}")]
    else:
        listing = listing.filtered(include, exclude)
        found = disagreements(entry, listing, exact)
        if not found:
            return HubCheck(endpoint, at, files=len(entry.files))
    first = found[0]
    more = f" (and {counted(len(found) - 1, 'more difference')})" if len(found) > 1 else ""
    raise IntegrityError(f"{entry.archive}: {first.path} differs from the Hub's listing at {endpoint}: "
                         f"{who} says {first.archive}, the Hub says {first.hub}{more}",
                         hint or "the revision may have moved since: fetch it again; if it differs "
                                 "again, the host or its endpoint hands out another model than the Hub")


def check_backups_at_hub(archives: Iterable[Path], endpoint: str, token: str | None = None
                         ) -> list[tuple[Path, HubCheck]]:
    """Backups carried by hand: each archive's manifest entry against the Hub's listing of its
    commit. One without an entry is not checked (nothing says which revision it holds); a filtered
    one (``.only-``: its patterns are not recorded) is checked for the files it holds."""
    out: list[tuple[Path, HubCheck]] = []
    for path in archives:
        entry = read_manifest(path.parent).get(path.name)
        if entry is None:
            at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            why = "no manifest entry says which revision it holds"
            out.append((path, HubCheck(endpoint, at, skipped=why)))
            continue
        out.append((path, check_entry(entry, endpoint, entry.commit, exact=".only-" not in path.name,
                                      token=token, who="the backup's manifest",
                                      hint="this backup is not the revision the Hub lists: get it again "
                                           "from a host you trust")))
    return out
