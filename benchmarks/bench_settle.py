"""`Swarm.settle` after a swarm download: the sessions one after another, or together (one tick for all).

A controller seeds a 2 MiB archive to two hosts on 127.0.0.1 (real libtorrent sessions); once both
have it, the three sessions' counts are settled and only that wait is timed: one session after
another (`Swarm.settle` each, as the tests did) or all at once (`swarm.settle([...])`). Each round is
its own subprocess; with `--before DIR` (a checkout of older code) its one-after-another runs too,
interleaved, so before/after come from one run.

    python benchmarks/bench_settle.py [--repeats 5] [--before /tmp/old]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from common import ROOT, machine

ROUND = r"""
import json, os, sys, tempfile, time
from pathlib import Path
from edgetam_provision.fleet import swarm
from edgetam_provision.integrity.hashing import sha256_file

together = sys.argv[1] == "together"
with tempfile.TemporaryDirectory() as tmp:
    archive = Path(tmp) / "models--org--tiny--0123456789ab.tar"
    archive.write_bytes(os.urandom(2 << 20))
    torrent = swarm.make_torrent(archive, sha256_file(archive))
    with swarm.Swarm(0, interface="127.0.0.1", controller=True, upload_limit=4 << 20) as ctl, \
            swarm.Swarm(0, interface="127.0.0.1") as a, swarm.Swarm(0, interface="127.0.0.1") as b:
        ctl.add(torrent, archive.parent, seed=True)
        for host, where in ((a, "a"), (b, "b")):
            (Path(tmp) / where).mkdir()
            host.add(torrent, Path(tmp) / where, peers=[("127.0.0.1", ctl.port)])
        assert a.wait(lambda: all(s.sample() >= 0 and s.finished(archive.name) for s in (a, b, ctl)),
                      time.monotonic() + 60)
        t0 = time.perf_counter()
        if together:
            swarm.settle([a, b, ctl])
        else:
            for s in (a, b, ctl):
                s.settle()
        print(json.dumps(time.perf_counter() - t0))
"""


def one_round(code: str, how: str) -> float:
    out = subprocess.run([sys.executable, "-c", ROUND, how], env={**os.environ, "PYTHONPATH": code},
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", help="a checkout of older code: its sessions settle one after another too")
    args = ap.parse_args()
    contenders = {"this code, one after another": (str(ROOT), "each"),
                  "this code, together": (str(ROOT), "together")}
    if args.before:
        contenders = {"before, one after another": (args.before, "each"), **contenders}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, (code, how) in contenders.items():
            times[name].append(one_round(code, how))
    print(f"settle of 3 sessions after a 2 MiB swarm download; {machine()}; {args.repeats} rounds")
    print("| contender | median s | min–max s |")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f}–{max(ts):.2f} |")


if __name__ == "__main__":
    main()
