"""Restore and backup vs the shell way, side by side; restore time for 10 MB, 100 MB, 1 GB.

- restore (hashing every byte, publishing atomically) vs `tar xf` + `sha256sum -c` (goal: <= 0.5x)
- backup (integrity check + pack + sha256) vs `tar cf` + `sha256sum`
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import interleave, machine, sh, table

from edgetam_provision.backup import backup
from edgetam_provision.repos import RepoSpec
from edgetam_provision.verify.synthetic import install_into_cache

PY = sys.executable


def make_repo(root: Path, size: int) -> tuple[Path, Path, Path]:
    """A cache with one repo of ~`size` bytes, its backup folder, and a sha256 list of its blobs."""
    cache, out = root / f"src-{size}", root / f"backups-{size}"
    files = {"model.safetensors": os.urandom(int(size * 0.9)),
             "config.json": b'{"bench": true}', "processor_config.json": b"{}"}
    files.update({f"extra/part-{i}.bin": os.urandom(int(size * 0.1 / 8)) for i in range(8)})
    install_into_cache(cache, "bench/model", files)
    backup(cache, [RepoSpec("bench/model")], out)
    sums = root / f"sums-{size}"
    sh(f"cd {cache} && find models--bench--model/blobs -type f | xargs sha256sum > {sums}")
    return cache, out, sums


def restore_vs_tar(root: Path, size: int, repeats: int) -> dict[str, list[float]]:
    _cache, out, sums = make_repo(root, size)
    archive = next(out.glob("*.tar"))
    target = root / "target"

    def fresh() -> None:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        os.sync()  # no contender starts with the previous one's dirty pages still being written back

    return interleave({
        "provision restore": lambda: sh(f"{PY} -m edgetam_provision restore {out} --cache-dir {target}"),
        "tar xf + sha256sum -c": lambda: sh(f"tar xf {archive} -C {target} && cd {target} && "
                                            f"sha256sum --quiet -c {sums}"),
    }, repeats, setup=fresh)


def restore_present_vs_tar(root: Path, size: int, repeats: int) -> dict[str, list[float]]:
    """Every blob already cached: we still hash every byte of the archive and compare the cache."""
    _cache, out, sums = make_repo(root, size)
    archive = next(out.glob("*.tar"))
    target = root / "present"
    sh(f"{PY} -m edgetam_provision restore {out} --cache-dir {target}")
    return interleave({
        "provision restore": lambda: sh(f"{PY} -m edgetam_provision restore {out} --cache-dir {target}"),
        "tar xf + sha256sum -c": lambda: sh(f"tar xf {archive} -C {target} && cd {target} && "
                                            f"sha256sum --quiet -c {sums}"),
    }, repeats)


def backup_vs_tar(root: Path, repeats: int) -> dict[str, list[float]]:
    cache, _out, _ = make_repo(root, 100_000_000)
    dest = root / "bk"

    def fresh() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()

    return interleave({
        "provision backup": lambda: sh(f"{PY} -m edgetam_provision backup bench/model --cache-dir {cache} "
                                       f"--out {dest}"),
        "tar cf + sha256sum": lambda: sh(f"tar cf {dest}/x.tar -C {cache} models--bench--model && "
                                         f"sha256sum {dest}/x.tar > {dest}/SHA256SUMS"),
    }, repeats, setup=fresh)


def main() -> str:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000_000, 100_000_000, 1_000_000_000]
    report = [f"Machine: {machine()}\n"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        scaling = []
        for size in sizes:
            times = restore_vs_tar(root, size, 5)
            report.append(table(f"Restore of a {size / 1e6:.0f} MB backup, every byte hashed",
                                times, "tar xf + sha256sum -c"))
            scaling.append((size, min(times["provision restore"])))
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
        report.append(table("Restore of a 100 MB backup whose blobs are all cached (every byte still hashed)",
                            restore_present_vs_tar(root, 100_000_000, 5), "tar xf + sha256sum -c"))
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        if len(scaling) > 1:
            report.append("Restore scaling (best of runs): " + ", ".join(
                f"{s / 1e6:.0f} MB {t:.2f} s ({s / 1e6 / t:.0f} MB/s)" for s, t in scaling) + "\n")
        report.append(table("Backup of a 100 MB repo (integrity check + pack + sha256)",
                            backup_vs_tar(root, 5), "tar cf + sha256sum"))
    return "\n".join(report)


if __name__ == "__main__":
    print(main())
