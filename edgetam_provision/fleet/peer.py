"""A host's side of `provision push --p2p`: take the archives from the swarm, check them, seed a while.

Run by the playbook on each host (``python -m edgetam_provision.fleet.peer fetch ...``), from the
wheel push installed there. ``fetch`` starts ``run`` in the background (its own session, so it
outlives the Ansible task) and waits until every archive is in the backups folder, checked, or
until it gave up; it prints one JSON document and exits 0 either way: the playbook copies what the
swarm did not deliver. ``run`` goes on seeding until ``stop`` (the playbook's task once every host
has its archives) or its own deadline, whichever is first; then nothing listens.

Only what Ansible handed over is trusted: the manifest and SHA256SUMS (in the backups folder) and
the torrents. A torrent must name an archive of the manifest with its size and sha256 before any
byte is asked for; every block a peer sends is checked against the torrent's SHA-256 Merkle tree
(a peer that sends wrong ones is dropped, the others carry on); the finished file is hashed whole
against the manifest before it is linked into the backups folder. ``restore`` then checks it all
again, as after a copy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fsutil import write_atomic
from ..integrity.hashing import sha256_file
from .swarm import Swarm, SwarmError, read_torrent

STATUS, STOP, LOG = "status.json", "stop", "peer.log"


@dataclass
class ArchiveResult:
    name: str
    path: str = "fallback"  # p2p | present | fallback (the copy brings it)
    from_controller: int = 0
    from_peers: int = 0
    hash_failures: int = 0
    why: str = ""


@dataclass
class Status:
    phase: str = "starting"  # starting | downloading | seeding | done
    complete: bool = False
    why: str = ""
    port: int = 0
    uploaded: int = 0
    archives: list[ArchiveResult] = field(default_factory=list)

    def save(self, meta: Path) -> None:
        write_atomic(meta / STATUS, json.dumps(asdict(self)))


def address(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT`` / ``[V6]:PORT`` / ``HOST`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port or (host.count(":") and not host.startswith("[")):
        host, port = text, str(default_port)
    return host.strip("[]"), int(port)


def controller_address(given: str, port: int) -> tuple[str, int]:
    """The controller as the host sees it: given, or (``auto[:PORT]``) the client end of this SSH session."""
    if given != "auto" and not given.startswith("auto:"):
        return address(given, port)
    ssh = (os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_CLIENT") or "").split()
    return (ssh[0] if ssh else "127.0.0.1"), int(given[5:] or port)


def checked_torrents(meta: Path, backups: Path) -> list[tuple[str, bytes]]:
    """(archive name, torrent) for each torrent that names a manifest archive by name, size and
    sha256; `SwarmError` for one that does not (nothing is downloaded then)."""
    from ..hub.manifest import read_manifest, read_sums

    manifest, sums = read_manifest(backups), read_sums(backups)
    out = []
    for path in sorted(meta.glob("*.torrent")):
        t = read_torrent(path.read_bytes())
        entry = manifest.get(t.name)
        if entry is None or os.sep in t.name or t.name.startswith("."):
            raise SwarmError(f"{path.name} names {t.name!r}, which the manifest does not list")
        if (t.size, t.sha256) != (entry.size, entry.sha256) or sums.get(t.name, t.sha256) != t.sha256:
            raise SwarmError(f"{path.name} does not match the manifest's {t.name} "
                             f"(size {t.size} vs {entry.size}, "
                             f"sha256 {t.sha256[:12]} vs {entry.sha256[:12]})")
        out.append((t.name, path.read_bytes()))
    return out


def run(args: argparse.Namespace) -> Status:
    """Download, check, link into the backups folder, seed until stopped or the deadline."""
    meta, backups = Path(args.meta), Path(args.backups)
    incoming = meta / "incoming"
    incoming.mkdir(exist_ok=True)
    status = Status()
    seed_until = time.monotonic() + args.seed_for
    try:
        torrents = checked_torrents(meta, backups)
        status.archives = [ArchiveResult(name) for name, _ in torrents]
        with Swarm(args.port, tries=args.tries) as swarm:
            status.port, status.phase = swarm.port, "downloading"
            status.save(meta)
            peers = [controller_address(args.controller, args.port)] + \
                [address(p, args.port) for p in args.peers.split(",") if p]
            todo = []
            for (name, torrent), res in zip(torrents, status.archives, strict=True):
                have = backups / name
                if have.is_file() and sha256_file(have) == read_torrent(torrent).sha256:
                    swarm.add(torrent, backups, seed=True)
                    res.path = "present"
                else:
                    swarm.add(torrent, incoming, peers=peers)
                    todo.append(res)
            swarm.wait(lambda: all(swarm.finished(r.name) for r in todo),
                       time.monotonic() + args.wait, stall=args.stall)
            swarm.settle()
            for res in todo:
                res.from_controller, res.from_peers = swarm.received[res.name].totals()
                res.hash_failures = swarm.received[res.name].hash_failures
                res.path, res.why = deliver(swarm, res.name, incoming, backups, torrents)
            status.complete = all(r.path != "fallback" for r in status.archives)
            status.phase = "seeding"
            status.save(meta)
            while time.monotonic() < seed_until and not (meta / STOP).exists():
                swarm.wait(lambda: (meta / STOP).exists(), min(seed_until, time.monotonic() + 1.0))
            status.uploaded = swarm.uploaded()
    except SwarmError as exc:
        status.why = str(exc)
    except (OSError, ValueError) as exc:
        status.why = f"{type(exc).__name__}: {exc}"
    status.phase, status.why = "done", status.why[:300]
    for res in status.archives:
        (incoming / res.name).unlink(missing_ok=True)
    status.save(meta)
    return status


def deliver(swarm: Swarm, name: str, incoming: Path, backups: Path,
            torrents: list[tuple[str, bytes]]) -> tuple[str, str]:
    """Link a finished, whole-file-checked archive into the backups folder; (path, why)."""
    if not swarm.finished(name):
        return "fallback", "no peer delivered it in time"
    want = read_torrent(dict(torrents)[name]).sha256
    got = sha256_file(incoming / name)
    if got != want:
        return "fallback", f"sha256 {got[:12]} is not the manifest's {want[:12]}"
    tmp = backups / f".{name}.p2p"
    tmp.unlink(missing_ok=True)
    os.link(incoming / name, tmp)  # the seeding session keeps reading its own name
    os.replace(tmp, backups / name)
    return "p2p", ""


def fetch(args: argparse.Namespace) -> Status:
    """Start `run` in the background and wait until it has the archives, gave up, or ended."""
    meta = Path(args.meta)
    for name in (STATUS, STOP):
        (meta / name).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "edgetam_provision.fleet.peer", "run"]
    for key, value in vars(args).items():
        if key != "cmd":
            argv += [f"--{key.replace('_', '-')}", str(value)]
    with (meta / LOG).open("ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, cwd=meta)
    end = time.monotonic() + args.wait + 60  # the child's own bound plus time to start and hash
    status = Status(why="the peer process did not report")
    while time.monotonic() < end:
        with contextlib.suppress(OSError, ValueError, TypeError):
            status = load(meta)
        if status.phase in ("seeding", "done") or child.poll() is not None:
            break
        time.sleep(0.1)
    if child.poll() is not None and status.phase not in ("seeding", "done"):
        status.why = status.why or f"the peer process ended (exit {child.returncode}); see {meta / LOG}"
    return status


def load(meta: Path) -> Status:
    d = json.loads((meta / STATUS).read_text())
    d["archives"] = [ArchiveResult(**a) for a in d.get("archives", [])]
    return Status(**d)


def stop(args: argparse.Namespace) -> Status:
    """Ask the seeding process to end and wait (bounded) until it did."""
    meta = Path(args.meta)
    write_atomic(meta / STOP, "")
    end = time.monotonic() + 30
    status = Status(why="no seeding process")
    while time.monotonic() < end:
        try:
            status = load(meta)
        except (OSError, ValueError, TypeError):
            break
        if status.phase == "done":
            break
        time.sleep(0.1)
    return status


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgetam_provision.fleet.peer")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("fetch", "run"):
        s = sub.add_parser(name)
        s.add_argument("--meta", required=True, help="folder of the .torrent files (and our status)")
        s.add_argument("--backups", required=True, help="backups folder holding manifest.json, SHA256SUMS")
        s.add_argument("--controller", default="auto",
                       help="HOST:PORT, or auto[:PORT] (this SSH session's client)")
        s.add_argument("--peers", default="", help="more HOST:PORT to start from, comma-separated")
        s.add_argument("--port", type=int, default=6881)
        s.add_argument("--tries", type=int, default=10, help="ports tried from --port on")
        s.add_argument("--stall", type=float, default=30.0, help="give up after this long without a byte")
        s.add_argument("--wait", type=float, default=3600.0, help="give up on the swarm after this long")
        s.add_argument("--seed-for", type=float, default=3600.0, help="seed at most this long")
    sub.add_parser("stop").add_argument("--meta", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    Path(args.meta).mkdir(parents=True, exist_ok=True)
    status = {"fetch": fetch, "run": run, "stop": stop}[args.cmd](args)
    print(json.dumps(asdict(status)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
