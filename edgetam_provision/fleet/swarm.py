"""A libtorrent session as `provision push --p2p` uses it, on the controller and on each host.

One session per process, TCP only, bound to one port of a configured range; no DHT, no local
discovery, no UPnP/NAT-PMP, no trackers: peers come from the addresses we hand out and from peer
exchange between them. Torrents are BitTorrent v2 only: every 16 KiB block is checked against a
SHA-256 Merkle tree whose roots the info dictionary holds, and the info dictionary also carries the
archive's whole-file sha256 (``sha256``), so the info-hash peers meet on commits to the sha256 our
manifest names. Integrity comes from those hashes and the manifest, never from BitTorrent's
obfuscation (which is left at libtorrent's default and protects nothing we rely on).

libtorrent is imported only when a session starts: a host without it falls back to the copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # libtorrent (2.1+ ships its stubs) is imported only when a session starts
    from libtorrent import alert, peer_info, torrent_handle, torrent_info

#: the controller's peer-id prefix: a host counts the bytes that came from it apart from its peers'
CONTROLLER_ID = "-EP0100-"
HOST_ID = "-EH0100-"
SHA_KEY = b"sha256"
#: pieces of at least 4 blocks: with one 16 KiB block a piece, libtorrent 2.1.1 refuses an honest peer's
#: answer to the hash request it sends after a bad peer's piece fails ("invalid hashes") and stalls
MIN_PIECE = 64 << 10
#: libtorrent brings its connections' counts up to date once a second: a tick, with a margin
TICK_S = 1.1


class SwarmError(Exception):
    """The swarm could not start or a torrent is not what the manifest names (the caller decides)."""


def load_libtorrent() -> ModuleType:
    try:
        import libtorrent
    except ImportError as exc:
        raise SwarmError(f"libtorrent is not installed ({exc})") from None
    return libtorrent


@dataclass(frozen=True)
class TorrentMeta:
    """What a .torrent says about its one file, read from its bytes by us (not trusted yet)."""

    name: str
    size: int
    sha256: str
    info_hash: str  # v2, hex


def read_torrent(data: bytes) -> TorrentMeta:
    """The one file a v2-only torrent holds; `SwarmError` for anything else."""
    lt = load_libtorrent()
    try:
        top = lt.bdecode(data)
        info = top[b"info"]
        tree = info[b"file tree"]
        if b"pieces" in info or b"files" in info or len(tree) != 1:
            raise ValueError("not a v2-only torrent of one file")
        (name, node), = tree.items()
        leaf = node[b""]
        size, sha = int(leaf[b"length"]), info[SHA_KEY].decode("ascii")
        ti = lt.torrent_info(top)
        if not ti.info_hashes().has_v2() or ti.info_hashes().has_v1():
            raise ValueError("not a v2-only torrent")
        return TorrentMeta(name.decode("utf-8"), size, sha, str(ti.info_hashes().v2))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, UnicodeDecodeError) as exc:
        raise SwarmError(f"not a torrent this tool made ({type(exc).__name__}: {str(exc)[:120]})") from None


def make_torrent(archive: Path, sha256: str) -> bytes:
    """A v2-only torrent of `archive` (SHA-256 Merkle pieces) whose info also names its whole sha256."""
    lt = load_libtorrent()
    ct = lt.create_torrent(lt.list_files(str(archive)), 0, lt.create_torrent.v2_only)
    if ct.piece_length() < MIN_PIECE:  # libtorrent's own choice for a small file: one block a piece
        ct = lt.create_torrent(lt.list_files(str(archive)), MIN_PIECE, lt.create_torrent.v2_only)
    lt.set_piece_hashes(ct, str(archive.parent))
    ct.set_creator("edgetam-provision")
    body = ct.generate()
    body[b"info"][SHA_KEY] = sha256.encode("ascii")
    encoded: bytes = lt.bencode(body)  # libtorrent ships no types: what it returns is said here
    return encoded


@dataclass
class Received:
    """Payload one torrent took: in all (libtorrent's count) and from the controller (the counts of
    its connections, which libtorrent brings up to date once a second: `Swarm.settle` waits for that
    after the download; anything a connection that closed early took in its last second is missed
    and counted as from peers)."""

    total: int = 0
    hash_failures: int = 0
    _controller_closed: int = 0
    _open: dict[tuple[str, int], int] = field(default_factory=dict)

    def sample(self, total: int, peers: Iterable[peer_info]) -> None:
        self.total = total
        for p in peers:
            if bytes.fromhex(str(p.pid))[:8] != CONTROLLER_ID.encode():
                continue
            host, port = p.ip
            key = (host, port)
            if p.total_download < self._open.get(key, 0):  # the same endpoint again: a new connection
                self._controller_closed += self._open[key]
            self._open[key] = p.total_download

    def totals(self) -> tuple[int, int]:
        """(bytes from the controller, bytes from peers)"""
        controller = min(self._controller_closed + sum(self._open.values()), self.total)
        return controller, self.total - controller


class Swarm:
    """One libtorrent session: ``with Swarm(port, ...) as s: s.add(...); s.wait(...)``."""

    def __init__(self, port: int, *, tries: int = 10, interface: str = "0.0.0.0", controller: bool = False,
                 upload_limit: int = 0, timeout: float = 10.0) -> None:
        self.lt = load_libtorrent()
        self.ports = (port, port + max(tries, 1) - 1)
        self.ses = self.lt.session({
            "listen_interfaces": f"{interface}:{port}", "max_retry_port_bind": max(tries - 1, 0),
            "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
            "enable_incoming_utp": False, "enable_outgoing_utp": False,
            "allow_multiple_connections_per_ip": True,  # hosts behind one NAT; peers on one loopback
            "peer_fingerprint": CONTROLLER_ID if controller else HOST_ID,
            "upload_rate_limit": upload_limit, "ignore_limits_on_local_network": False,
            "alert_mask": self.lt.alert_category.status | self.lt.alert_category.error,
            "close_redundant_connections": False})  # a seed keeps its connection to the controller:
        # its counts settle after the download (and a host that connects late still finds peers)
        self.port = self._listening(timeout)
        self.handles: dict[str, torrent_handle] = {}
        self.infos: dict[str, torrent_info] = {}
        self.received: dict[str, Received] = {}

    def _listening(self, timeout: float) -> int:
        """The TCP port bound, within the range (libtorrent takes any free port past it: refused)."""
        end, port = time.monotonic() + timeout, 0
        while time.monotonic() < end and not port:
            for a in self._alerts(0.2):
                tcp = getattr(a, "socket_type", None) == self.lt.socket_type_t.tcp
                if isinstance(a, self.lt.listen_succeeded_alert) and tcp:
                    port = int(a.port)
        if port and (self.ports[0] == 0 or self.ports[0] <= port <= self.ports[1]):
            return port
        self.close()
        raise SwarmError(f"no free port in {self.ports[0]}–{self.ports[1]}: every one is taken")

    def _alerts(self, wait: float) -> list[alert]:
        self.ses.wait_for_alert(int(wait * 1000))
        alerts: list[alert] = self.ses.pop_alerts()
        for a in alerts:
            if isinstance(a, self.lt.hash_failed_alert) and a.torrent_name in self.received:
                self.received[a.torrent_name].hash_failures += 1
        return alerts

    def add(self, torrent: bytes, save_path: Path, *, seed: bool = False,
            peers: Iterable[tuple[str, int]] = ()) -> str:
        """Add one torrent (`seed`: its file is there and already checked); returns its file name."""
        meta = read_torrent(torrent)
        atp = self.lt.add_torrent_params()
        atp.ti = self.infos[meta.name] = self.lt.torrent_info(self.lt.bdecode(torrent))
        atp.save_path = str(save_path)
        atp.peers = list(peers)
        atp.flags = (atp.flags | self.lt.torrent_flags.seed_mode) if seed else atp.flags
        atp.flags &= ~(self.lt.torrent_flags.auto_managed | self.lt.torrent_flags.paused)  # all run at once
        self.handles[meta.name] = self.ses.add_torrent(atp)
        self.received[meta.name] = Received()
        return meta.name

    def set_upload_slots(self, slots: int) -> None:
        """Send to at most `slots` peers at once (libtorrent's unchoke slots; its default is 8)."""
        self.ses.apply_settings({"unchoke_slots_limit": max(slots, 1)})

    def connect(self, peers: Iterable[tuple[str, int]]) -> None:
        for h in self.handles.values():
            for peer in peers:
                h.connect_peer(peer)

    def finished(self, name: str) -> bool:
        st = self.handles[name].status()
        return bool(st.is_seeding or st.is_finished)

    def wait(self, until: Callable[[], bool], deadline: float, stall: float | None = None) -> bool:
        """Pump alerts until `until()` (True), `deadline` (monotonic) or no payload
        byte arrives for `stall` seconds (False)."""
        last, moved = -1, time.monotonic()
        while not until():
            now = time.monotonic()
            if now >= deadline or (stall is not None and now - moved > stall):
                return False
            self._alerts(0.1)
            got = self.sample()
            if got != last:
                last, moved = got, time.monotonic()
        self._alerts(0)
        self.sample()
        return True

    def settle(self, bound: float = 3.0) -> None:
        """Wait (at most `bound` s) until the per-connection counts stop moving (one stats tick)."""
        settle([self], bound)

    def sample(self) -> int:
        """Bring every torrent's `Received` up to date; the payload bytes taken so far."""
        for name, h in self.handles.items():
            if h.is_valid():
                self.received[name].sample(h.status().total_payload_download, h.get_peer_info())
        return sum(r.total for r in self.received.values())

    def uploaded(self) -> int:
        return sum(h.status().total_payload_upload for h in self.handles.values() if h.is_valid())

    def close(self) -> None:
        """Stop the session: nothing listens afterwards."""
        ses, self.ses = getattr(self, "ses", None), None
        if ses is not None:
            ses.pause()
            for h in getattr(self, "handles", {}).values():
                if h.is_valid():
                    ses.remove_torrent(h)
            del ses

    def __enter__(self) -> Swarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def settle(swarms: Sequence[Swarm], bound: float = 3.0) -> None:
    """Wait (at most `bound` s) until no session's per-connection counts move across one stats tick:
    the sessions wait out each tick together (`tick`), one tick for all of them, not one each."""
    end, last = time.monotonic() + bound, None
    while time.monotonic() < end:
        for s in swarms:
            s.sample()
        now = [[r.totals() for r in s.received.values()] for s in swarms]
        if now == last:
            return
        last = now
        tick(swarms)


def tick(swarms: Sequence[Swarm]) -> None:
    """Let one stats tick (`TICK_S`) pass for every session at once, taking their alerts meanwhile (a
    hash failure is counted as it comes). Time, not an alert, is what the counts wait for."""
    until = time.monotonic() + TICK_S
    while (left := until - time.monotonic()) > 0:
        for s in swarms:
            s._alerts(min(left, 0.1) if s is swarms[0] else 0)
