"""Crash-safe file primitives: every write is a temp file in the same folder + `os.replace`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import CacheError, LockedError

CHUNK = 4 * 1024 * 1024
TMP_PREFIX = ".provision-tmp-"


def tmp_sibling(path: Path) -> Path:
    """A fresh, unique temp name in the same folder as `path` (same filesystem: atomic rename)."""
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


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


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Open a temp sibling for writing; on success it replaces `path`, on any error it vanishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    try:
        with open(tmp, "xb") as fh:
            yield fh
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically."""
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
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path`, waiting up to `timeout` seconds for it.

    The kernel releases the lock when the holder dies, so a killed restore never blocks the next.
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise disk_error(exc, lock_path) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(f"another provision process is using {lock_path.parent}",
                                      "wait for it to finish, then run this again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
