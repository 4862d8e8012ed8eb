"""Side-by-side timing: interleaved repetitions of each contender, medians, min-max, ratios."""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def machine() -> str:
    cores = len(__import__("os").sched_getaffinity(0))
    return f"{platform.system()} {platform.machine()}, {cores} cores, Python {platform.python_version()}"


def interleave(contenders: dict[str, Callable[[], object]], repeats: int,
               setup: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Run each contender `repeats` times, round-robin (so drift hits all alike); seconds each."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            if setup:
                setup()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def sh(cmd: str, cwd: Path | None = None) -> None:
    subprocess.run(cmd, shell=True, check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def table(title: str, times: dict[str, list[float]], baseline: str, unit: str = "s",
          higher_is_better: bool = False, sizes: dict[str, float] | None = None) -> str:
    """A markdown table: median, min-max, and the ratio to `baseline` (same run)."""
    scale = 1000 if unit == "ms" else 1
    base = statistics.median(times[baseline])
    rate_col = "MB/s | " if sizes else ""
    lines = [f"### {title}", "",
             f"| contender | median ({unit}) | min–max ({unit}) | {rate_col}vs {baseline} |",
             f"|---|---:|---:|{'---:|' if sizes else ''}---:|"]
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = (base / med) if higher_is_better else (med / base)
        rate = f" {sizes[name] / 1e6 / med:.0f} |" if sizes else ""
        lines.append(f"| {name} | {med * scale:.3f} | {min(ts) * scale:.3f}–{max(ts) * scale:.3f} |{rate} "
                     f"{ratio:.2f}× |")
    return "\n".join(lines) + "\n"
