"""`provision serve`: run the mirror (`mirror`) on uvicorn until Ctrl-C, and say what it serves.

While it runs, ``<cache>/.provision-serve.json`` says where and what (written atomically, removed
on exit); `provision status` reads it, so a lab can see what its mirror serves.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ..console import ProgressFn, no_progress
from ..fsutil import write_atomic
from ..hub.cache import RepoSpec
from .app import MirrorApp, build_index, check_bind, require_server, stderr_log

STATE = ".provision-serve.json"
KEEP_ALIVE_S = 5  # idle connections are closed after this
MAX_CONNECTIONS = 256  # beyond this, uvicorn answers 503 at once instead of queueing without bound


def serve(cache: Path, specs: list[RepoSpec], host: str, port: int, all_public: bool,
          progress: ProgressFn = no_progress, log: ProgressFn = stderr_log) -> dict[str, Any]:
    """Check and index what is served, then serve it until interrupted; returns what was served."""
    uvicorn = require_server()
    index = build_index(cache, specs, all_public, progress)
    warning = check_bind(host)
    if warning:
        progress(warning)
    config = uvicorn.Config(MirrorApp(index, log), host=host, port=port, log_level="warning",
                            access_log=False, timeout_keep_alive=KEEP_ALIVE_S,
                            limit_concurrency=MAX_CONNECTIONS, h11_max_incomplete_event_size=16 * 1024,
                            server_header=False, lifespan="on")
    server = uvicorn.Server(config)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    state = {"pid": os.getpid(), "url": url, "repos": index.summary()}
    write_atomic(cache / STATE, json.dumps(state, indent=1))
    progress(f"mirror on {url}: HF_ENDPOINT={url} on the other machines (Ctrl-C stops it)")
    try:
        server.run()
    finally:
        with contextlib.suppress(OSError):
            if json.loads((cache / STATE).read_text()).get("pid") == os.getpid():
                (cache / STATE).unlink()
    return {"url": url, "repos": index.summary(), "stopped": True}


def running_mirror(cache: Path) -> dict[str, Any] | None:
    """What a mirror running on this cache serves, if one is running."""
    try:
        state = json.loads((cache / STATE).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state
