"""`provision push --p2p`'s swarm: real libtorrent sessions on 127.0.0.1, each on its own port.

Every wait is on a condition (a finished torrent, bytes from a peer) with a bound, never a sleep."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MISSING_P2P, REPO_ROOT
from hypothesis import given
from hypothesis import strategies as st

from edgetam_provision.hub.manifest import ArchiveEntry, record
from edgetam_provision.integrity.hashing import sha256_file

lt = pytest.importorskip("libtorrent", reason=MISSING_P2P)

from edgetam_provision.fleet import p2p, peer, swarm  # noqa: E402
from edgetam_provision.fleet.swarm import Swarm, SwarmError, make_torrent, read_torrent, settle  # noqa: E402

SIZE = 2 << 20
BOUND = 60.0  # seconds any one wait may take on a loaded shared machine before the test fails


def backups_with(folder: Path, data: bytes, name: str = "models--org--tiny--0123456789ab.tar") -> Path:
    """A backups folder holding one archive of `data`, with manifest.json and SHA256SUMS."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    record(folder, [ArchiveEntry(archive=name, repo_id="org/tiny", commit="0123456789ab" + "0" * 28,
                                 refs=("main",), files=(), sha256=sha256_file(folder / name), size=len(data),
                                 compression="none", tool_version="test", created="")])
    return folder / name


def local(port: int = 0, interface: str = "127.0.0.1", **kw) -> Swarm:
    return Swarm(port, interface=interface, **kw)


def done(s: Swarm, name: str, *others: Swarm) -> bool:
    """Wait until `s` and `others` (pumped alongside) have the file, then until their counts settle."""
    ok = s.wait(lambda: all(o.sample() >= 0 and o.finished(name) for o in (s, *others)),
                time.monotonic() + BOUND)
    settle([s, *others])
    return ok


@pytest.fixture
def archive(tmp_path) -> Path:
    return backups_with(tmp_path / "controller", os.urandom(SIZE))


def test_a_controller_and_two_hosts_complete_the_archive_byte_for_byte(archive, tmp_path):
    torrent = make_torrent(archive, sha256_file(archive))
    with local(controller=True, upload_limit=4 << 20) as ctl, local() as a, local() as b:
        ctl.add(torrent, archive.parent, seed=True)
        for host, where in ((a, "a"), (b, "b")):
            (tmp_path / where).mkdir()
            host.add(torrent, tmp_path / where, peers=[("127.0.0.1", ctl.port)])
        assert done(a, archive.name, b)
        for host, where in ((a, "a"), (b, "b")):
            assert sha256_file(tmp_path / where / archive.name) == sha256_file(archive)
            from_controller, from_peers = host.received[archive.name].totals()
            assert from_controller + from_peers >= SIZE and from_controller > 0


class Moving:
    """A session (to `settle`) whose one torrent's counts move at each of its first `moves` ticks."""

    def __init__(self, moves: int, ticks: list[int]) -> None:
        self.moves, self.ticks = moves, ticks
        self.received = {"a.tar": swarm.Received()}

    def sample(self) -> int:
        self.received["a.tar"].total = min(len(self.ticks), self.moves)
        return self.received["a.tar"].total


@given(moves=st.lists(st.integers(0, 6), min_size=1, max_size=6))
def test_property_sessions_settle_together_one_tick_past_the_last_that_moved(moves):
    """Settling N sessions waits out each tick once for all of them: one tick past the last tick in
    which any session's counts moved (the longest, not the sum), and never before it."""
    ticks: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(swarm, "tick", lambda swarms: ticks.append(len(swarms)))
        settle([Moving(m, ticks) for m in moves], bound=60.0)
    assert ticks == [len(moves)] * (max(moves) + 1)


def test_real_sessions_settle_in_one_tick_between_them(monkeypatch):
    ticks: list[int] = []
    real = swarm.tick
    monkeypatch.setattr(swarm, "tick", lambda swarms: (ticks.append(len(swarms)), real(swarms)))
    with local() as a, local() as b, local() as c:
        settle([a, b, c])
    assert ticks == [3]


def test_a_torrent_is_v2_only_and_commits_to_the_manifest_sha256(archive):
    meta = read_torrent(make_torrent(archive, sha256_file(archive)))
    assert (meta.name, meta.size, meta.sha256) == (archive.name, SIZE, sha256_file(archive))
    info = lt.bdecode(make_torrent(archive, "0" * 64))[b"info"]
    assert b"pieces" not in info and b"file tree" in info  # no SHA-1 v1 piece list


def test_a_peer_sending_wrong_pieces_is_refused_by_hash_and_the_host_completes_from_the_others(archive,
                                                                                             tmp_path):
    torrent = make_torrent(archive, sha256_file(archive))
    liar = tmp_path / "liar"
    liar.mkdir()
    (liar / archive.name).write_bytes(archive.read_bytes())
    (tmp_path / "host").mkdir()
    # the honest controller is slow, the liar fast: the host asks the liar for most blocks at first.
    # Each session has an address of its own: libtorrent bans an address, and on a fleet each host has one
    with local(controller=True, upload_limit=1 << 20, interface="127.0.0.3") as ctl, \
            local(interface="127.0.0.2") as lying, local() as host:
        ctl.add(torrent, archive.parent, seed=True)
        lying.add(torrent, liar)  # checks its good copy: a seed
        assert done(lying, archive.name)
        with (liar / archive.name).open("r+b") as f:  # then its bytes go bad under it
            for at in range(0, SIZE, 4096):
                f.seek(at)
                f.write(b"\0" * 64)
        host.add(torrent, tmp_path / "host", peers=[("127.0.0.3", ctl.port), ("127.0.0.2", lying.port)])
        assert done(host, archive.name)
        assert host.received[archive.name].hash_failures > 0
    assert sha256_file(tmp_path / "host" / archive.name) == sha256_file(archive)


def test_a_host_completes_when_a_peer_leaves_mid_swarm(archive, tmp_path):
    torrent = make_torrent(archive, sha256_file(archive))
    (tmp_path / "host").mkdir()
    with local(controller=True, upload_limit=1 << 20) as ctl, local() as host:
        ctl.add(torrent, archive.parent, seed=True)
        other = local(upload_limit=1 << 20)
        other.add(torrent, archive.parent, seed=True)
        host.add(torrent, tmp_path / "host", peers=[("127.0.0.1", ctl.port), ("127.0.0.1", other.port)])
        assert host.wait(lambda: host.sample() >= SIZE // 4, time.monotonic() + BOUND)
        assert not host.finished(archive.name)
        other.close()  # the peer goes away with the transfer under way
        assert done(host, archive.name)
        assert host.received[archive.name].totals()[1] > 0  # it did send its share before it left
    assert sha256_file(tmp_path / "host" / archive.name) == sha256_file(archive)


def occupied(base: int, n: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for port in range(base, base + n):
            socks.append(socket.socket())
            socks[-1].bind(("", port))  # every address: a session on 127.0.0.1 or 0.0.0.0 finds it taken
            socks[-1].listen()
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def taken_run(n: int) -> tuple[int, list[socket.socket]]:
    """n ports in a row, taken here (held from the moment they are found: no other test, run at the
    same time, can take one in between): the first and the listening sockets."""
    for base in range(42000, 60000, 97):
        try:
            return base, occupied(base, n)
        except OSError:
            continue
    pytest.skip("no run of free ports on this machine")


def test_all_ports_taken_is_a_clear_error_on_the_controller_and_a_fallback_on_a_host(archive, tmp_path):
    base, socks = taken_run(3)
    try:
        with pytest.raises(SwarmError, match=f"no free port in {base}–{base + 2}"):
            local(base, tries=3)
        from edgetam_provision.errors import UsageError
        with pytest.raises(UsageError, match="every one is taken"), \
                p2p.seeding(archive.parent, tmp_path / "work", port=base, interface="127.0.0.1", tries=3):
            pass
        host = tmp_path / "host"
        host.mkdir()
        for f in ("manifest.json", "SHA256SUMS"):
            (host / f).write_bytes((archive.parent / f).read_bytes())
        (tmp_path / "work" / "p2p" / f"{archive.name}.torrent").rename(host / "x.torrent")
        status = peer.run(host_args(host, host, base, tries=3))
    finally:
        for s in socks:
            s.close()
    assert not status.complete and "every one is taken" in status.why


def host_args(meta: Path, backups: Path, port: int, controller: str = "127.0.0.1:1",
              **kw) -> argparse.Namespace:
    args = peer.parser().parse_args(["run", "--meta", str(meta), "--backups", str(backups),
                                     "--port", str(port), "--controller", controller, "--stall", "20",
                                     "--wait", str(BOUND), "--seed-for", "0"])
    vars(args).update(kw)
    return args


def test_a_torrent_that_does_not_match_the_manifest_is_refused_before_any_byte(archive, tmp_path):
    other = tmp_path / "other" / archive.name
    other.parent.mkdir()
    other.write_bytes(os.urandom(SIZE))  # same name and size, other bytes
    meta, host = tmp_path / "meta", tmp_path / "host"
    meta.mkdir()
    host.mkdir()
    (meta / "a.torrent").write_bytes(make_torrent(other, sha256_file(other)))
    for f in ("manifest.json", "SHA256SUMS"):
        (host / f).write_bytes((archive.parent / f).read_bytes())
    with local(controller=True) as ctl:
        ctl.add(make_torrent(other, sha256_file(other)), other.parent, seed=True)
        status = peer.run(host_args(meta, host, 0, controller=f"127.0.0.1:{ctl.port}"))
        assert ctl.uploaded() == 0
    assert not status.complete and "does not match the manifest" in status.why
    assert sorted(p.name for p in host.iterdir()) == ["SHA256SUMS", "manifest.json"]


def test_a_host_without_libtorrent_reports_the_fallback(archive, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "libtorrent", None)
    status = peer.run(host_args(archive.parent, tmp_path, 0))
    assert not status.complete and "libtorrent is not installed" in status.why


@pytest.mark.parametrize("archives", [1, 3])
def test_the_controller_sends_to_one_host_per_archive_at_once(archives, tmp_path):
    """Each piece then leaves the controller about once; the hosts spread it (benchmarks/bench_p2p.py)."""
    for i in range(archives):
        backups_with(tmp_path / "controller", os.urandom(64 << 10), name=f"models--org--m{i}--0.tar")
    with p2p.seeding(tmp_path / "controller", tmp_path / "work", port=0, interface="127.0.0.1") as seeding:
        assert len(seeding.swarm.handles) == archives
        assert seeding.swarm.ses.get_settings()["unchoke_slots_limit"] == archives


def test_fetch_returns_once_the_archive_is_in_the_backups_folder_seeds_until_stopped_then_nothing_listens(
        archive, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    for f in ("manifest.json", "SHA256SUMS"):
        (host / f).write_bytes((archive.parent / f).read_bytes())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    with p2p.seeding(archive.parent, tmp_path / "work", port=0, interface="127.0.0.1") as seeding:
        meta = tmp_path / "work" / "p2p"
        cmd = [sys.executable, "-m", "edgetam_provision.fleet.peer"]
        out = subprocess.run([*cmd, "fetch", "--meta", str(meta), "--backups", str(host), "--port", "0",
                              "--controller", f"127.0.0.1:{seeding.swarm.port}", "--wait", str(BOUND)],
                             capture_output=True, text=True, env=env, timeout=BOUND + 90)
        fetched = json.loads(out.stdout)
        assert fetched["phase"] == "seeding" and fetched["complete"], out.stderr
        assert fetched["archives"][0]["path"] == "p2p" and fetched["archives"][0]["from_controller"] >= SIZE
        assert sha256_file(host / archive.name) == sha256_file(archive)
        assert seeding.summary()["controller_uploaded"] >= SIZE
        port = fetched["port"]
        stopped = json.loads(subprocess.run([*cmd, "stop", "--meta", str(meta)], capture_output=True,
                                            text=True, env=env, timeout=BOUND).stdout)
    assert stopped["phase"] == "done" and not (meta / "incoming" / archive.name).exists()
    for p in (port, seeding.swarm.port):
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # free again: nothing listens after the push
