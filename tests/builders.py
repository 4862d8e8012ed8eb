"""Helpers the tests share, each written once: tar members and archives, fetch command lines,
the agent's traces on this machine (the tests' "host")."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path


def lfs_blob_name(data: bytes) -> str:
    """The blob name huggingface_hub gives an LFS file: its sha256."""
    return hashlib.sha256(data).hexdigest()


def write_tar(path: Path, members, fmt: int = tarfile.PAX_FORMAT, end_marker: bool = True) -> Path:
    """A tar of (TarInfo, bytes | None) members; without the end-of-archive marker if asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
        body_end = tar.offset
    data = buf.getvalue()
    path.write_bytes(data if end_marker else data[:body_end])
    return path


def fetch_args(sshd, hub, out: Path, *extra: str) -> list[str]:
    """`provision fetch` against the test sshd and the Hub stand-in, the agent run by this Python."""
    return ["fetch", *sshd.ssh_args(), "--remote-python", sys.executable, "--endpoint", hub.endpoint,
            "--out", str(out), *extra]


def agent_dirs(sshd) -> set[str]:
    """The private temporary folders of the agents `sshd` started (its sessions' TMPDIR: another
    test's agents, run at the same time, are not counted)."""
    return {p.name for p in sshd.tmp.glob("provision-agent-*")}


def small_files_cache(cache: Path, repo_id: str, folders: int, per_folder: int) -> str:
    """A cached revision of `folders` x `per_folder` tiny files (10 to 200 bytes, every one distinct),
    laid out as huggingface_hub lays it: ``blobs/<git sha1>`` (``blobs/<sha256>`` for the ``.bin``
    files, as LFS files are named), a relative link per file, ``refs/main``. Returns the commit."""
    from edgetam_provision.hub.layout import blob_name, repo_folder_name, snapshot_link

    rng = __import__("random").Random(folders * 1_000_003 + per_folder)
    commit = hashlib.sha1(f"{repo_id} {folders}x{per_folder}".encode()).hexdigest()
    repo = cache / repo_folder_name(repo_id)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for d in range(folders):
        snap = repo / "snapshots" / commit / f"d{d:03d}"
        snap.mkdir(parents=True, exist_ok=True)
        for i in range(per_folder):
            name = f"f{i:04d}.bin" if i % 10 == 0 else f"f{i:04d}.txt"
            data = f"{d}/{i}\n".encode() + rng.randbytes(rng.randint(10, 200))
            blob = blob_name(data, lfs=name.endswith(".bin"))
            (repo / "blobs" / blob).write_bytes(data)
            os.symlink(snapshot_link(f"d{d:03d}/{name}", blob), snap / name)
    (repo / "refs" / "main").write_text(commit)
    return commit
