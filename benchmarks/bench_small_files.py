"""Many small files: restore and check of one revision of N tiny files, beside `tar xf` + sha256.

A genuine backup (`provision backup` of a cache laid out as huggingface_hub lays it: 100 folders of
N/100 files of 10 to 200 bytes, blobs named by git sha1, LFS-style sha256 for every tenth) is
restored into a fresh cache, with its manifest and without one (the archive alone, a hand-made
backup's case), and checked (`provision check`). Each run is a subprocess: wall time and its peak
RSS (`os.wait4`'s rusage of that child). The anchor is the shell way: `tar xf` of the same archive
and a sha256 pass over every file it wrote. With `--before DIR` (a checkout of older code) the
same contenders run that code too, interleaved, so before/after come from one run.

    python benchmarks/bench_small_files.py [--files 100000] [--repeats 3] [--before /tmp/old]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import ROOT, machine

from edgetam_provision.backup import backup
from edgetam_provision.repos import RepoSpec

PY = sys.executable
REPO = "bench/small"


def measured(cmd: list[str] | str, code: Path | None = None) -> tuple[float, float, float]:
    """Run `cmd` (a shell line when a str) with `code` first on PYTHONPATH: (wall seconds, peak RSS in
    MB, CPU seconds: user + system, steadier than wall time on a shared machine)."""
    env = {**os.environ, "PYTHONPATH": str(code or ROOT)}
    t0 = time.perf_counter()
    # not from the checkout: `python -m` puts the working folder first, before PYTHONPATH's code
    proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def build(root: Path, files: int) -> None:
    """The cache (in ``root/src``) and its backup (in ``root/backups``)."""
    from builders import small_files_cache

    small_files_cache(root / "src", REPO, 100, files // 100)
    backup(root / "src", [RepoSpec(REPO)], root / "backups")


def make_backup(root: Path, files: int) -> tuple[Path, Path, Path]:
    """(folder with manifest, folder with the archive alone, the archive). Built by a process of its
    own: a contender is started by vfork, and the peak RSS the kernel then reports for it is at
    least this process's (177 MB once it had built 100,000 files; now about 30). The source cache
    stays until the end, like every target: see `main` on deleting."""
    out, bare = root / "backups", root / "bare"
    subprocess.run([PY, __file__, "--build", str(root), "--files", str(files)], check=True)
    archive = next(out.glob("*.tar"))
    bare.mkdir()
    os.link(archive, bare / archive.name)
    return out, bare, archive


Run = Callable[[Path], tuple[float, float, float]]  # given a fresh, empty target folder


def contenders(root: Path, files: int, before: Path | None) -> dict[str, Run]:
    out, bare, archive = make_backup(root, files)
    provision = [PY, "-m", "edgetam_provision"]
    runs: dict[str, Run] = {
        "tar xf + sha256sum of every file": lambda target: measured(
            f"tar xf {archive} -C {target} && cd {target} && find . -type f -print0 | "
            "xargs -0 sha256sum > /dev/null"),
    }
    for label, code in (("", None), (" (before)", before)) if before else (("", None),):
        runs.update({
            f"restore, with manifest{label}": lambda target, c=code: measured(
                [*provision, "restore", str(out), "--cache-dir", str(target)], c),
            f"restore, archive alone{label}": lambda target, c=code: measured(
                [*provision, "restore", str(bare), "--cache-dir", str(target)], c),
            f"check, with manifest{label}": lambda _target, c=code: measured(
                [*provision, "check", str(out)], c),
        })
    return runs


def main() -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # make_backup's own process
    args = ap.parse_args()
    if args.build:
        build(args.build, args.files)
        return ""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        runs = contenders(root, args.files, args.before)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            for i, (name, run) in enumerate(runs.items()):
                # a new folder each time, none deleted until the end: on ext4 without a journal (this
                # disk) a create scans past every inode freed in the last 60 s (300 s once its table
                # block is dirty), so a run after deleting the last one's 200,000 entries paid for them
                target = root / f"target-{repeat}-{i}"
                target.mkdir()
                os.sync()
                results[name].append(run(target))
                wall, rss, cpu = results[name][-1]
                print(f"{name}: {wall:.2f} s, CPU {cpu:.2f} s, {rss:.0f} MB", file=sys.stderr)
    anchor = statistics.median(t for t, _, _ in results["tar xf + sha256sum of every file"])
    anchor_cpu = statistics.median(c for _, _, c in results["tar xf + sha256sum of every file"])
    lines = [f"### Restore of {args.files:,} tiny files (100 folders, 10–200 bytes each), every byte hashed",
             "", f"Machine: {machine()}; {args.repeats} interleaved runs each.", "",
             "| contender | wall, median (s) | min–max (s) | vs tar (wall) | CPU (s) | vs tar (CPU) "
             "| peak RSS (MB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rs in results.items():
        ts, cpu = [t for t, _, _ in rs], statistics.median(c for _, _, c in rs)
        lines.append(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f}–{max(ts):.2f} | "
                     f"{statistics.median(ts) / anchor:.2f}× | {cpu:.2f} | {cpu / anchor_cpu:.2f}× | "
                     f"{max(m for _, m, _ in rs):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if said := main():
        print(said)
