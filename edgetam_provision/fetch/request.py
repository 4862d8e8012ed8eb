"""What `provision fetch` was asked to do, checked before any connection is made."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import UsageError
from ..repos import RepoSpec
from .limits import STALL_S, TIMEOUT_S
from .shipped import BOOT

PYTHON_RE = re.compile(r"^[A-Za-z0-9_./+-]{1,200}\Z")
TRANSFERS = ("auto", "openssh", "stream")


def check_python(python: str) -> str:
    """`--remote-python` goes into a command line: plain path characters only."""
    if not PYTHON_RE.match(python):
        raise UsageError(f"not a usable path to a Python: {python!r}", "pass a path like /usr/bin/python3")
    return python


def remote_command(python: str) -> str:
    """The one fixed command run on the host; everything else travels on stdin."""
    return f"{check_python(python)} -u -c \"{BOOT}\""


@dataclass(frozen=True)
class FetchRequest:
    """Everything `provision fetch` was asked to do: where, what, and what follows the pull."""

    specs: tuple[RepoSpec, ...]
    out: Path
    host: str | None = None  # None: --local
    ssh: dict[str, Any] = field(default_factory=dict)  # port, user, identity, ssh_config, known_hosts
    python: str | None = None
    endpoint: str | None = None
    token: str | None = None
    bootstrap: bool = False
    timeout: float = TIMEOUT_S
    accept_new_host_key: bool = False
    transfer: str = "auto"
    streams: int = 0  # parallel OpenSSH streams per archive; 0: by size
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    fresh: bool = False
    stall: float = STALL_S  # seconds a host's download may make no progress before we give up
    then_restore: Path | None = None  # the cache to restore into (and verify), if any
    verify: Any = None  # a VerifyRequest for after the restore
    debug: bool = False  # also say what only a debugging reader needs (the SSH cipher)

    def params(self) -> dict[str, Any]:
        """What the agent is told on stdin."""
        return {"repos": [{"repo_id": s.repo_id, "revision": s.revision, "repo_type": s.repo_type,
                           "include": list(self.include), "exclude": list(self.exclude)} for s in self.specs],
                "endpoint": self.endpoint, "token": self.token, "bootstrap": self.bootstrap,
                "fresh": self.fresh}


def check_request(req: FetchRequest) -> None:
    """Everything that can be wrong before any connection: said now, with exit 2."""
    if req.endpoint is not None:
        url = urlsplit(req.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UsageError(f"the endpoint {req.endpoint!r} is not an http(s) URL",
                             "give one such as https://hf-mirror.example.org")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    if req.host is None and offline:
        raise UsageError("HF_HUB_OFFLINE is set, and a fetch on this machine downloads from the Hub",
                         "unset HF_HUB_OFFLINE for this command, or download on a host you can ssh to")
    identity = req.ssh.get("identity")
    if identity and not Path(identity).expanduser().is_file():
        raise UsageError(f"no such key file: {identity}", "name a key file: the private key's path")
    if req.transfer not in TRANSFERS:
        raise UsageError(f"unknown transfer {req.transfer!r}", f"use one of {', '.join(TRANSFERS)}")
    check_python(req.python or "python3")
