"""`provision fetch`'s chain, in one place: fetch, hash every blob, then (asked) restore and verify.

`fetch.run` only fetches: it pulls each archive, holds it to the acceptance rule and to the Hub's
listing. This module decides the order of the rest and what a failure keeps. `provision push` runs
the same chain per host (fleet/push.yml: the backups checked here by `check_backups` before they
travel, then `provision restore` and `provision verify` on each host).

Each archive is read three times, each pass guarding one thing, none repeated: its bytes as they
arrive (1), its headers (2), its blobs (4); pass 3 reads none of it.

1. received (`fetch.pull`, `fetch.openssh`): the sha256 of the whole archive, hashed while its bytes
   arrive, against the host's word (its ``packed`` event, which the manifest records): a cut or
   altered transfer. Resumable. (An archive already in the out folder is hashed whole once instead.)
2. admitted (`trust.accept.admit`, in `fetch.run.check_pulled`): member headers (a compressed
   archive is decompressed once) against the host's announcement: exactly what was asked, nothing
   planted, every size within what was declared. No blob bytes are hashed. What it read (the
   archive's `ArchiveContents`) is handed on (`fetch.run.Fetched.admitted`).
3. anchored (`trust.hub_check`): no archive bytes; the announced listing against the Hub's own
   listing of the revision, asked from here without credentials: a self-consistent other model.
4. blobs hashed against their names (`restore.read`): bytes that are not the blob they are named
   for, which passes 1 to 3 cannot see (the host hashed what it sent, and the names are the Hub's).
   With a restore, the restore's own read is this pass (what it hashes is what it stages: nothing
   is read twice for it); without, `restore.run.check_backups` reads each archive once. Either is
   handed the contents of pass 2 (`restore.run.Admitted`, with the sha256 of pass 1), so it neither
   reads the headers again nor hashes the whole file again: every blob is still read at the offset
   pass 2 found and hashed against its name, so what reaches the cache is what was admitted, byte
   for byte, even were the file changed on disk since. The restore still checks free space and
   that the cache does not contradict the archive (same commit, another blob) before it writes.
   `provision restore` and `check`, given files by the user, run passes 2 and 1 themselves.

An archive any pass refuses is removed from the out folder and from its manifest, and the fetch
fails (exit 1 for bytes that do not match their hash: the restore's own error); nothing is written
into the cache. So when the fetch says OK, every archive it lists is complete, is what was asked,
and every blob in it is the blob its name says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .console import ProgressFn, counted
from .errors import CorruptArchiveError, IntegrityError, UnsafeArchiveError, VerificationFailed
from .fetch.client import Pulled
from .fetch.request import FetchRequest
from .fetch.run import Fetched, fetch_archives
from .hub.manifest import record
from .restore.plan import RestorePlan
from .verify.report import FailedVerdict, VerifyReport

#: a restore's refusals that are about an archive's bytes (not the cache, the lock or the disk)
ARCHIVE_FAULTS = (IntegrityError, UnsafeArchiveError, CorruptArchiveError)


@dataclass(frozen=True)
class FetchResult:
    """What a fetch kept: the archives (each with its Hub check), how long the fetch took, and what
    the restore and the verify that ``--restore`` runs did."""

    out: Path
    pulled: tuple[Pulled, ...]
    seconds: float  # from the start of the fetch to the end of the Hub checks
    restored: RestorePlan | None = None
    verified: VerifyReport | None = None

    @property
    def fetched_bytes(self) -> int:
        return sum(p.entry.size for p in self.pulled if not p.already_here)

    @property
    def mb_per_s(self) -> float | None:
        return round(self.fetched_bytes / 1e6 / self.seconds, 1) if self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """The object of ``fetch --json``."""
        data: dict[str, Any] = {
            "out": str(self.out),
            "archives": [{**p.to_dict(), "hub": p.entry.hub.to_dict() if p.entry.hub else None}
                         for p in self.pulled],
            "seconds": round(self.seconds, 3), "bytes": self.fetched_bytes, "mb_per_s": self.mb_per_s}
        if self.restored is not None:
            data["restore"] = self.restored.to_dict()
        if self.verified is not None:
            data["verify"] = self.verified.to_json()
        return data


def fetch(req: FetchRequest, progress: ProgressFn, bar: bool = False) -> FetchResult:
    """Fetch, hash every blob, then (``req.then_restore``) restore and verify EdgeTAM if it came.

    Raises the first failure; a failed verify raises `VerificationFailed` carrying the whole
    `FetchResult` (its report included), rendered before the error."""
    t0 = time.monotonic()
    fetched = fetch_archives(req, progress, bar)
    result = FetchResult(req.out, tuple(fetched.pulled), time.monotonic() - t0)
    plan = hash_blobs(result, req.then_restore, progress, fetched)
    if plan is None:
        return result
    result = replace(result, restored=plan)
    edgetam = next((p.entry for p in result.pulled if p.entry.repo_id == req.verify.repo_id), None)
    if edgetam is None:
        return result
    from .verify.run import verify_model

    try:
        report = verify_model(replace(req.verify, revision=edgetam.commit), progress=progress)
    except FailedVerdict as err:
        raise VerificationFailed(err.message, err.hint, repo=edgetam.repo_id, revision=edgetam.commit,
                                 result=replace(result, verified=err.report)) from None
    return replace(result, verified=report)


def hash_blobs(result: FetchResult, cache: Path | None, progress: ProgressFn,
               fetched: Fetched) -> RestorePlan | None:
    """Pass 4: every blob of every archive hashed against its name, by the restore into `cache`
    (its plan returned) or, without one, by `check_backups`, from what pass 2 read (`fetched`'s
    contents, taken out of it: the read lets go of their members). An archive it refuses is removed
    from the out folder and its manifest, and the refusal is raised, saying so."""
    from .restore.run import Admitted, check_backups, restore

    archives = [p.archive for p in result.pulled]
    received = {p.archive.resolve(): p.entry.sha256 for p in result.pulled}
    admitted = {path: Admitted(contents, received[path]) for path, contents in fetched.admitted.items()
                if path in received}
    fetched.admitted.clear()  # handed over, once
    try:
        if cache is not None:
            return restore(archives, cache, progress, admitted=admitted)
        progress(f"hashing every blob of {counted(len(archives), 'archive')} against its name…")
        check_backups(archives, progress, admitted=admitted)
        return None
    except ARCHIVE_FAULTS as err:
        bad = next((p for p in result.pulled
                    if err.path and Path(err.path).resolve() == p.archive.resolve()), None)
        if bad is None:
            raise
        bad.archive.unlink(missing_ok=True)
        record(result.out, [])  # drops the removed archive's entry
        others = len(result.pulled) - 1
        kept = (f"; the {counted(others, 'other archive')} stay in {result.out}, recorded (a restore "
                "hashes every byte of them)") if others else ""
        what = err.message.removeprefix(f"{bad.archive.name}: ")
        raise type(err)(f"{bad.archive.name} was refused: {what}",
                        f"it was removed from {result.out} and its manifest, and nothing was written into "
                        f"the cache{kept}; fetch again, from a host you trust if it fails again",
                        path=bad.archive, repo=bad.entry.repo_id, revision=bad.entry.commit) from None
