"""Crash-safe file primitives: every write is a temp file in the same folder + `os.replace`."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import CacheError, LockedError

CHUNK = 8 * 1024 * 1024  # one read/write size for every file loop
TMP_PREFIX = ".provision-tmp-"
#: our files inside a hub cache (lock, staging, the mirror's state) live in huggingface_hub's own
#: ``.locks`` folder: on the cache's filesystem, and skipped by its `scan_cache_dir`
PRIVATE_DIR = ".locks"
LOCK_PATH = f"{PRIVATE_DIR}/provision.lock"
LOCK_WAIT_S = 600.0  # a restore of many GB can hold the lock for minutes
LOCK_POLL_S = 0.05  # how often a waiting restore tries the lock again


def tmp_sibling(path: Path) -> Path:
    """A fresh, unique temp name in the same folder as `path` (same filesystem: atomic rename).
    Its length does not grow with `path`'s name: any name that fits NAME_MAX has a temp name."""
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{os.urandom(8).hex()}")


def disk_error(exc: OSError, what: Path) -> CacheError:
    """Translate an OSError during a write into a CacheError with a useful hint."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return CacheError(f"no space left while writing {what}",
                          "free some disk space (or choose another --cache-dir) and run it again; "
                          "nothing was published")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheError(f"cannot write {what}: {exc.strerror}",
                          "check the folder's permissions or pass --cache-dir")
    return CacheError(f"cannot write {what}: {exc.strerror or exc}", "see --debug for details")


def settle_mode(tmp: Path, path: Path, mode: int | None = None) -> None:
    """Give `tmp`, about to replace `path`, its permissions: `mode` when given, else those of the
    file it replaces; a new file keeps what its creation gave (``0o666`` less the umask, as
    huggingface_hub's files get: a shared cache's ``umask 002`` stays group-writable)."""
    if mode is None:
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(path.stat().st_mode)
    if mode is not None:
        os.chmod(tmp, mode)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int | None = None) -> Iterator[BinaryIO]:
    """Open a temp sibling for writing; on success it replaces `path` (with the permissions
    `settle_mode` gives), on any error it vanishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    try:
        with open(tmp, "xb") as fh:
            yield fh
        settle_mode(tmp, path, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_atomic(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Write `data` to `path` atomically; permissions as `settle_mode` gives them."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_writer(path, mode) as fh:
        fh.write(data)


def symlink_atomic(target: str, path: Path) -> None:
    """Create or replace the symlink `path` -> `target` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def copy_atomic(src: Path, path: Path) -> None:
    """Copy `src`'s bytes to `path` atomically (used where symlinks are unsupported)."""
    with atomic_writer(path) as fh, open(src, "rb") as sfh:
        shutil.copyfileobj(sfh, fh, CHUNK)


def symlinks_supported(folder: Path) -> bool:
    """True when `folder`'s filesystem can hold symlinks (huggingface_hub copies otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = tmp_sibling(folder / "symlink-probe")
    try:
        os.symlink("target", probe)
    except OSError:
        return False
    probe.unlink()
    return True


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read into one buffer, again and again)."""
    h, buf = hashlib.sha256(), bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


@contextlib.contextmanager
def cache_lock(cache: Path, timeout: float = LOCK_WAIT_S,
               waiting: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """Hold the cache's provision lock, waiting up to `timeout` seconds for it (and saying so
    through `waiting` when another process holds it).

    An advisory ``flock`` on ``<cache>/.locks/provision.lock``: the same lock `filelock` takes on
    POSIX (so older versions and this one exclude each other), without importing it (50–120 ms of a
    restore's start). The kernel releases it when the holder dies, so a killed restore never
    blocks the next.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: filelock's own lock
        yield from _filelock(cache, timeout, waiting)
        return
    path = cache / LOCK_PATH
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise disk_error(exc, path) from None
    try:
        deadline, said = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(f"another provision process is using {cache}",
                                      "wait for it to finish, then run this again") from None
                if not said:
                    waiting(f"waiting for another provision process to finish with {cache} "
                            f"(up to {timeout:.0f} s; its lock: {path})")
                    said = True
                time.sleep(min(LOCK_POLL_S, max(0.0, deadline - time.monotonic())))
        yield
    finally:
        os.close(fd)  # releases the lock


def _filelock(cache: Path, timeout: float, waiting: Callable[[str], None]) -> Iterator[None]:
    import filelock

    path = cache / LOCK_PATH
    lock = filelock.FileLock(str(path), timeout=timeout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            waiting(f"waiting for another provision process to finish with {cache} (up to {timeout:.0f} s)")
            lock.acquire()
    except filelock.Timeout:
        raise LockedError(f"another provision process is using {cache}",
                          "wait for it to finish, then run this again") from None
    except OSError as exc:
        raise disk_error(exc, path) from None
    try:
        yield
    finally:
        lock.release()


def clean_stale(cache: Path, staging_prefix: str, folders: list[str]) -> None:
    """Remove what runs that died (their pid is gone) left: staging folders (in ``.locks/``, and
    at the top of the cache where earlier versions staged), temp siblings."""
    for root, prefix in ((cache / PRIVATE_DIR, staging_prefix), (cache, "." + staging_prefix)):
        for p in root.glob(prefix + "*"):
            if _dead(p.name, prefix):
                shutil.rmtree(p, ignore_errors=True)
    for folder in folders:
        for p in (cache / folder).rglob(TMP_PREFIX + "*"):
            if _dead(p.name, TMP_PREFIX):
                p.unlink(missing_ok=True)


def _dead(name: str, prefix: str) -> bool:
    pid = name[len(prefix):].split("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
