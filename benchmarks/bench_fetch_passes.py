"""What `fetch --restore` (and fetch without it) spends after the pull, side by side: fetch's own
check (`admit`) then the blob pass, the blob pass handed what the check admitted (now) vs the blob
pass admitting again and hashing the whole file again in a thread (before issue 27's item 5).

Both read the same archive from the page cache; wall time and CPU time (all threads) per run.
Usage: python benchmarks/bench_fetch_passes.py [SIZE]   (default 256 MiB)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_restore import make_repo
from common import machine, table

from edgetam_provision.hub.manifest import read_manifest
from edgetam_provision.restore.run import Admitted, check_backups, restore
from edgetam_provision.trust.accept import admit


def main() -> str:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256 << 20
    repeats = 5
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        _cache, out, _sums = make_repo(root, size)
        [(name, entry)] = read_manifest(out).items()
        archive = (out / name).resolve()
        target = root / "target"

        def handed() -> dict[Path, Admitted]:  # fetch's check_pulled, then the hand-over
            return {archive: Admitted(admit(archive, entry), entry.sha256)}

        def again() -> dict[Path, Admitted]:  # fetch's check_pulled, its contents dropped
            admit(archive, entry)
            return {}

        def restore_with(pre: Callable[[], dict[Path, Admitted]]) -> Callable[[], object]:
            return lambda: restore([archive], target, admitted=pre())

        def check_with(pre: Callable[[], dict[Path, Admitted]]) -> Callable[[], object]:
            return lambda: check_backups([archive], admitted=pre())

        def fresh() -> None:
            shutil.rmtree(target, ignore_errors=True)

        report = [f"# fetch's passes after the pull (bench_fetch_passes.py)\n\nMachine: {machine()}; "
                  f"one uncompressed archive of {size >> 20} MiB from `provision backup`, in the page cache; "
                  f"{repeats} interleaved runs each.\n"]
        passes = (("--restore (into an empty cache)", restore_with), ("without --restore", check_with))
        for what, run in passes:
            contenders = {"handed the admitted contents (now)": run(handed),
                          "admit again + whole sha256 again (before)": run(again)}
            wall: dict[str, list[float]] = {k: [] for k in contenders}
            cpu: dict[str, list[float]] = {k: [] for k in contenders}
            for _ in range(repeats):
                for label, fn in contenders.items():
                    fresh()
                    w0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    wall[label].append(time.perf_counter() - w0)
                    cpu[label].append(time.process_time() - c0)
            base = "admit again + whole sha256 again (before)"
            report.append(table(f"fetch {what}: check + blob pass, wall", wall, base))
            report.append(table(f"fetch {what}: check + blob pass, CPU (all threads)", cpu, base))
        return "\n".join(report)


if __name__ == "__main__":
    print(main())
