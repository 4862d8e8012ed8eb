"""`provision push --p2p` against the Ansible copy: 8 loopback sshd hosts, one 64 MB archive.

Each host is its own sshd (its own HOME) and, with --p2p, its own libtorrent session on its own
port. Measured in one run, each round from empty hosts (tags install + copy: the transfer alone):
the bytes this machine sent (p2p: libtorrent's payload count of the controller's session; copy:
every host takes the whole archive from here) and the wall time. The controller's upload is capped
(CAP) with --p2p to stand for an uplink that is small against the hosts' aggregate; the copy cannot
be capped from here (Ansible has no rate limit), so its wall time is a lower bound.
Goal (issue 29): the controller sends <= 2x the archive with p2p, against 8x with the copy.
Two p2p rounds: the controller sending to 8 hosts at once (libtorrent's default unchoke slots, as
before) and to one host per archive (push's default since): the same swarm otherwise.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_push import inventory
from common import machine
from sshd import SSHServer

from edgetam_provision.backup import backup
from edgetam_provision.fleet.push import PushRequest, build_wheel, push
from edgetam_provision.repos import RepoSpec
from edgetam_provision.verify.synthetic import install_into_cache

HOSTS, SIZE, CAP = 8, 64_000_000, 16_000_000  # bytes/s the controller sends at most with --p2p


def host_python(folder: Path) -> Path:
    """This Python with libtorrent's folder after the ones the playbook puts on PYTHONPATH."""
    import libtorrent

    site = Path(libtorrent.__file__).resolve().parents[1]
    path = folder / "python-p2p"
    path.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}"\nexport PYTHONPATH\n'
                    f'exec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return path


def main() -> str:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        servers = [SSHServer(Path(tempfile.mkdtemp(dir=root))) for _ in range(HOSTS)]
        try:
            cache = root / "cache"
            install_into_cache(cache, "bench/model", {"model.safetensors": os.urandom(SIZE),
                                                      "config.json": b"{}"})
            backups = root / "backups"
            backup(cache, [RepoSpec("bench/model")], backups)
            archive = sum(p.stat().st_size for p in backups.glob("*.tar*"))
            wheel, inv = build_wheel(root), inventory(root / "fleet.ini", servers)
            inv.write_text(inv.read_text().replace(sys.executable, str(host_python(root))))
            rows = []
            for p2p, slots in ((False, None), (True, 8), (True, None)):
                for s in servers:
                    shutil.rmtree(s.home / ".cache", ignore_errors=True)
                start = time.perf_counter()
                res = push(PushRequest(hosts=(), backups=backups, inventory=inv, wheel=wheel, forks=HOSTS,
                                       tags=("install", "copy"), p2p=p2p, p2p_upload_limit=CAP,
                                       p2p_upload_slots=slots, p2p_port=47000))
                wall = time.perf_counter() - start
                assert not any(r["error"] for r in res["hosts"]), res  # no verify: passed stays False
                if p2p:
                    assert all(r["path"] == "p2p" for r in res["hosts"]), res["hosts"]
                    sent = res["p2p"]["controller_uploaded"]
                    peers = sum(r["from_peers"] for r in res["hosts"])
                else:
                    sent, peers = archive * sum(r["copied"] for r in res["hosts"]), 0
                to = f"{slots} hosts at once (libtorrent's default)" if slots else "1 host per archive"
                rows.append((f"push --p2p (controller capped at {CAP / 1e6:.0f} MB/s, sends to {to})" if p2p
                             else "push (Ansible copy, uncapped)", wall, sent, peers))
        finally:
            for s in servers:
                s.stop()
    lines = [f"Machine: {machine()}", "", f"{HOSTS} hosts, one archive of {archive / 1e6:.1f} MB "
             "(tags install, copy: the transfer alone)", "",
             "| path | wall s | controller sent | x archive | hosts took from peers |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {wall:.1f} | {sent / 1e6:.1f} MB | {sent / archive:.2f} | {peers / 1e6:.1f} MB |"
              for name, wall, sent, peers in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
    sys.exit(0)
