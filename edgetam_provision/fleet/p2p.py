"""The controller's side of `provision push --p2p`: a v2 torrent of each archive, seeded for the push.

Hosts are handed the torrents, the manifest and SHA256SUMS, and this session's port (their SSH
session tells them our address); they take pieces from us and from each other (peer exchange),
and seed until the last host has its archives. The session closes when the push ends: nothing
listens afterwards. Host side: `fleet.peer`; the session itself: `fleet.swarm`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..hub.manifest import SUMS, read_manifest
from .swarm import Swarm, SwarmError, make_torrent

DEFAULT_PORT = 6881
PORT_TRIES = 10


@dataclass
class Seeding:
    """A running controller session and the playbook variables that point hosts at it."""

    swarm: Swarm
    archive_bytes: int
    variables: dict[str, Any]

    def summary(self) -> dict[str, int]:
        return {"port": self.swarm.port, "archive_bytes": self.archive_bytes,
                "controller_uploaded": self.swarm.uploaded()}


def write_torrents(backups: Path, meta: Path) -> dict[Path, bytes]:
    """A .torrent per archive of the manifest (the archives were checked just before)."""
    entries = read_manifest(backups)
    if not entries or not (backups / SUMS).is_file():
        raise UsageError(f"a peer-to-peer push needs {backups}/manifest.json and {SUMS}",
                         "backups made by fetch or backup have them; hand-made archives travel by copy")
    meta.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, entry in sorted(entries.items()):
        if (backups / name).is_file():
            torrent = make_torrent(backups / name, entry.sha256)
            (meta / f"{name}.torrent").write_bytes(torrent)
            out[backups / name] = torrent
    return out


@contextmanager
def seeding(backups: Path, work: Path, port: int = DEFAULT_PORT, upload_limit: int = 0,
            interface: str = "0.0.0.0", tries: int = PORT_TRIES,
            upload_slots: int | None = None) -> Iterator[Seeding]:
    """Seed every archive of `backups` from one session for the block's lifetime.

    The controller sends to `upload_slots` hosts at once (default: one per archive). Each piece then
    leaves here about once and the hosts spread it among themselves: with libtorrent's default of 8
    slots, 8 hosts each took distinct pieces from here at 1/8 of the uplink before they had much to
    trade (benchmarks/results/p2p.md: 2.3x the archive against 1.0x with one slot, and slower)."""
    meta = work / "p2p"
    try:
        torrents = write_torrents(backups, meta)
        swarm = Swarm(port, tries=tries, controller=True, upload_limit=upload_limit, interface=interface)
    except SwarmError as exc:
        raise UsageError(f"cannot seed the archives: {exc}",
                         "install libtorrent (the p2p extra) or choose free ports") from None
    try:
        for archive, torrent in torrents.items():
            swarm.add(torrent, archive.parent, seed=True)
        swarm.set_upload_slots(upload_slots or len(torrents))
        yield Seeding(swarm, sum(p.stat().st_size for p in torrents), {
            "provision_p2p": True, "provision_p2p_meta": str(meta), "provision_p2p_port": port,
            "provision_p2p_controller": f"auto:{swarm.port}"})
    finally:
        swarm.close()
