"""`make bench`: every side-by-side comparison, as markdown, into benchmarks/results/cpu.md."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [("bench_pull.py", []), ("bench_restore.py", []), ("bench_cold_start.py", []),
           ("bench_verify.py", ["cpu", "5"]), ("bench_push.py", []), ("bench_serve.py", []),
           ("bench_fetch.py", [])]


def main() -> None:
    parts = [f"# edgetam-provision benchmarks ({time.strftime('%Y-%m-%d')})\n",
             "Reproduce with `make bench`. Each table compares contenders run interleaved in one run.\n"]
    for script, args in SCRIPTS:
        print(f"running {script} {' '.join(args)}…", file=sys.stderr)
        out = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                             cwd=HERE)
        failed = f"{script} failed:\n```\n{out.stderr[-2000:]}\n```\n"
        parts.append(out.stdout if out.returncode == 0 else failed)
    text = "\n".join(parts)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
