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


def agent_dirs() -> set[str]:
    """The agents' private temporary folders on this machine."""
    return {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("provision-agent-*")}
