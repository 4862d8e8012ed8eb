"""`provision serve`: run the mirror (`app`) on uvicorn until Ctrl-C or SIGTERM, and say what it served.

While it runs, ``<cache>/.locks/provision-serve.json`` says where and what (written atomically, again
when a revision is served again or no longer, removed on exit); `provision status` reads it, so a
lab can see what its mirror serves.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from ..console import ProgressFn, no_progress
from ..errors import Interrupted, UsageError
from ..fsutil import PRIVATE_DIR, open_regular, write_atomic
from ..repos import RepoSpec
from .app import MirrorApp, check_bind, is_loopback, require_server, stderr_log
from .guard import HEADER_TIMEOUT_S, guarded_protocol
from .index import build_index

if TYPE_CHECKING:
    import uvicorn

STATE = f"{PRIVATE_DIR}/provision-serve.json"  # where huggingface_hub's cache scan does not look
KEEP_ALIVE_S = 5  # idle connections are closed after this
MAX_CONNECTIONS = 256  # beyond this, uvicorn answers 503 at once instead of queueing without bound


def serve(cache: Path, specs: list[RepoSpec], host: str, port: int, all_public: bool,
          progress: ProgressFn = no_progress, log: ProgressFn = stderr_log,
          header_timeout: float = HEADER_TIMEOUT_S,
          ready: Callable[[Listening], None] = lambda _start: None) -> Served:
    """Check and index what is served, then serve it until Ctrl-C or SIGTERM (the state file is
    removed and what was served is returned; stopped by Ctrl-C, its verdict is Interrupted's).
    `ready` gets, once the port listens, where and what (`Listening`)."""
    require_server()
    import uvicorn
    sock = _bind(host, port)
    index = build_index(cache, specs, all_public, progress, log)
    warning = check_bind(host)
    if warning:
        progress(warning)
    app = MirrorApp(index, log)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=KEEP_ALIVE_S,
                            limit_concurrency=MAX_CONNECTIONS, h11_max_incomplete_event_size=16 * 1024,
                            http=guarded_protocol(header_timeout), server_header=False, lifespan="on")
    server = _stoppable(config)
    port = sock.getsockname()[1]
    urls = [f"http://{a if ':' not in a else f'[{a}]'}:{port}" for a in reachable_addresses(host)]

    def write_state() -> None:
        state = {"pid": os.getpid(), "url": urls[0], "urls": urls, "repos": index.summary()}
        with contextlib.suppress(OSError):
            (cache / PRIVATE_DIR).mkdir(exist_ok=True)
            write_atomic(cache / STATE, json.dumps(state, indent=1))

    write_state()
    index.changed = write_state
    ready(Listening(urls[0], tuple(urls), host, port, is_loopback(host), index.summary()))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        with contextlib.suppress(OSError, ValueError):
            if json.loads((cache / STATE).read_text()).get("pid") == os.getpid():
                (cache / STATE).unlink()
    stopped_by = signal.Signals(server.stopped_by).name if server.stopped_by else None
    return Served(urls[0], tuple(urls), index.summary(), stopped_by, app.requests, app.bytes_sent)


@dataclass(frozen=True)
class Listening:
    """Where the mirror listens (its first URL, then the others it is reachable on) and what it
    serves (the index's summary, JSON as the state file holds it)."""

    url: str
    urls: tuple[str, ...]
    host: str
    port: int
    loopback_only: bool
    repos: list[dict[str, Any]]

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "urls": list(self.urls), "host": self.host, "port": self.port,
                "loopback_only": self.loopback_only, "repos": self.repos}


@dataclass(frozen=True)
class Served:
    """What a mirror served until it stopped; its verdict: Interrupted's code when Ctrl-C stopped it."""

    url: str
    urls: tuple[str, ...]
    repos: list[dict[str, Any]]  # the index's summary (JSON)
    stopped_by: str | None  # the signal's name: SIGINT, SIGTERM
    requests: int
    bytes_sent: int

    @property
    def exit_code(self) -> int:
        return Interrupted.exit_code if self.stopped_by == signal.SIGINT.name else 0

    def to_dict(self) -> dict[str, object]:
        """The object of ``serve --json`` at its end; its ``exit_code``, when not 0, is `exit_code`'s."""
        data: dict[str, object] = {"url": self.url, "urls": list(self.urls), "repos": self.repos,
                                   "stopped": True, "stopped_by": self.stopped_by, "requests": self.requests,
                                   "bytes_sent": self.bytes_sent}
        if self.exit_code:
            data["exit_code"] = self.exit_code
        return data


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is said: a port in use is a clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host!r}: {exc.strerror}", "choose an address of this "
                         "machine to listen on (127.0.0.1, or 0.0.0.0 for every interface)") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use", f"choose another port (e.g. {port + 1}), "
                             "or stop what listens there") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         "choose another address or port") from None
    sock.set_inheritable(True)
    return sock


def reachable_addresses(host: str) -> list[str]:
    """Where other machines reach a server bound to `host`: itself, or for a wildcard address this
    machine's name and its addresses (never 0.0.0.0, which no client can use)."""
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    name = socket.gethostname()
    found = [name]
    with contextlib.suppress(OSError):
        for *_, addr in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM):
            ip = addr[0]
            if isinstance(ip, str) and ip not in found and not ip.startswith("127.") and ip != "::1":
                found.append(ip)
    return found


class _Stoppable(Protocol):
    stopped_by: int | None  # the first signal that stopped it

    def run(self, sockets: list[socket.socket] | None = None) -> None: ...


def _stoppable(config: uvicorn.Config) -> _Stoppable:
    """uvicorn's Server, where Ctrl-C and SIGTERM stop it gracefully and are not raised again after
    (uvicorn re-raises them, which ended the process before the state file was removed)."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    return Server(config)


def running_mirror(cache: Path) -> dict[str, Any] | None:
    """What a mirror running on this cache serves, if one is running."""
    try:
        with open_regular(cache / STATE) as fh:
            state = json.loads(fh.read(1 << 20))
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None
