"""Which libtorrent setting keeps the controller's upload near one archive (issue 29: <= 2x)?

The swarm alone, without Ansible or sshd: a controller session (`fleet.swarm.Swarm`, capped at CAP)
seeding and HOSTS host sessions, each on its own loopback address, all started at once with the
controller and the other hosts as their starting peers (as `provision push --p2p` hands them).
Per setting, one round from empty hosts: the bytes the controller sent against the archives and
the time until every host had them. bench_p2p.py measures the chosen one through push itself.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine

from edgetam_provision.fleet.swarm import Swarm, load_libtorrent, make_torrent

HOSTS, SIZE, CAP = 8, 64_000_000, 16_000_000


def trial(root: Path, data: dict[str, bytes], *, settings: dict[str, Any] | None = None, flags: int = 0,
          max_uploads: int = 0, controller_after: float = 0.0) -> tuple[float, int]:
    """(seconds until every host has every archive, bytes the controller sent)."""
    src = Path(tempfile.mkdtemp(dir=root))
    torrents = {}
    for name, body in data.items():
        (src / name).write_bytes(body)
        torrents[name] = make_torrent(src / name, hashlib.sha256(body).hexdigest())
    swarms = [Swarm(48000, controller=True, upload_limit=CAP, interface="127.0.0.1")]
    ctl = swarms[0]
    for t in torrents.values():
        ctl.add(t, src, seed=True)
    ctl.ses.apply_settings(settings or {})
    for h in ctl.handles.values():
        h.set_flags(flags) if flags else None
        h.set_max_uploads(max_uploads) if max_uploads else None
    start = time.monotonic()
    hosts = [(f"127.0.0.{i + 2}", 48100 + 10 * i) for i in range(HOSTS)]
    for i, (ip, port) in enumerate(hosts):
        swarms.append(Swarm(port, interface=ip))
        others = [hosts[(i + j) % HOSTS] for j in range(1, min(HOSTS, 9))]
        first = others if controller_after else [("127.0.0.1", ctl.port), *others]
        into = Path(tempfile.mkdtemp(dir=root))
        for t in torrents.values():
            swarms[-1].add(t, into, peers=first)
    late = bool(controller_after)
    while not all(s.finished(n) for s in swarms[1:] for n in s.handles) and time.monotonic() - start < 300:
        for s in swarms:
            s.ses.pop_alerts()
        if late and time.monotonic() - start > controller_after:
            for s in swarms[1:]:
                s.connect([("127.0.0.1", ctl.port)])
            late = False
        time.sleep(0.05)
    wall, sent = time.monotonic() - start, ctl.uploaded()
    for s in swarms:
        s.close()
    return wall, sent


def main() -> str:
    lt = load_libtorrent()
    one = {"a.tar": os.urandom(SIZE)}
    two = {"a.tar": os.urandom(SIZE // 2), "b.tar": os.urandom(SIZE // 2)}
    levers: list[tuple[str, dict[str, bytes], dict[str, Any]]] = [
        ("libtorrent's defaults (8 unchoke slots, round robin)", one, {}),
        ("super seeding", one, {"flags": lt.torrent_flags.super_seeding}),
        ("strict super seeding", one, {"flags": lt.torrent_flags.super_seeding,
                                       "settings": {"strict_super_seeding": True}}),
        ("seed_choking_algorithm fastest_upload", one, {"settings": {"seed_choking_algorithm": 1}}),
        ("seed_choking_algorithm anti_leech", one, {"settings": {"seed_choking_algorithm": 2}}),
        ("max_uploads 2 on the torrent (its least)", one, {"max_uploads": 2}),
        ("hosts meet the controller 3 s after their peers", one, {"controller_after": 3.0}),
    ] + [(f"unchoke_slots_limit {n}", one, {"settings": {"unchoke_slots_limit": n}}) for n in (4, 3, 2, 1)]
    levers += [
        ("2 archives, libtorrent's defaults", two, {}),
        ("2 archives, unchoke_slots_limit 1", two, {"settings": {"unchoke_slots_limit": 1}}),
        ("2 archives, unchoke_slots_limit 2 (one per archive)", two,
         {"settings": {"unchoke_slots_limit": 2}}),
    ]
    lines = [f"Machine: {machine()}", "", f"{HOSTS} host sessions, {SIZE / 1e6:.0f} MB of archives, "
             f"controller capped at {CAP / 1e6:.0f} MB/s, one round each", "",
             "| controller setting | wall s | controller sent | x archives |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for name, data, kw in levers:
            wall, sent = trial(Path(tmp), data, **kw)
            lines.append(f"| {name} | {wall:.1f} | {sent / 1e6:.1f} MB | {sent / SIZE:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
