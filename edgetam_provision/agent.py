"""The program `provision fetch` runs on the clean host (or, with --local, here).

Shipped as source over the SSH channel's stdin, after `layout.py` and `pack.py` (so packing is the
very same code on both ends), and run by one fixed command: no repo id, revision or token ever reaches a
shell. Needs the standard library and huggingface_hub (0.2x-0.3x, or >= 1.0) only.

Protocol: stdin carries one JSON line of parameters, then JSON commands; stdout carries JSON
event lines, and after a ``data`` event exactly ``length`` raw bytes of an archive.

Credentials are cleaned before huggingface_hub is imported: a private temporary HF_HOME and HOME,
no HF_TOKEN / HUGGING_FACE_HUB_TOKEN, implicit token disabled, ``NETRC=/dev/null`` (requests-based
huggingface_hub sends Basic auth from ~/.netrc even with token=False), no shared blob store. A token
for a gated repo arrives in the parameters and is passed as an argument, never through the
environment. The temporary folder is removed on every exit, Ctrl-C and lost connections included.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

with contextlib.suppress(ImportError):  # shipped: layout.py and pack.py ran just before, in this namespace
    from .layout import COMMIT_RE, archive_name, repo_folder_name, valid_repo_id, valid_revision
    from .pack import pack_repo
CREDENTIAL_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH",
                   "HF_HUB_ENABLE_HF_TRANSFER")
SEND_CHUNK = 8 * 1024 * 1024  # fsutil.CHUNK: the agent runs alone on the host, so it cannot import it


class AgentError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def clean_environment(tmp: Path, endpoint: str | None) -> None:
    """Strip every credential huggingface_hub or requests could send; set a private home."""
    for var in CREDENTIAL_VARS:
        os.environ.pop(var, None)
    home = tmp / "home"
    home.mkdir()
    os.environ.update({
        "HOME": str(home), "HF_HOME": str(tmp / "hf_home"), "NETRC": "/dev/null",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HUB_DISABLE_SHARED_BLOBS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_XET": "1", "DO_NOT_TRACK": "1",
    })
    os.environ.pop("HF_HUB_OFFLINE", None)
    if endpoint:
        os.environ["HF_ENDPOINT"] = endpoint


def import_hub(tmp: Path, bootstrap: bool) -> Any:
    """Import huggingface_hub, installing it into the temporary folder when asked to."""
    try:
        import huggingface_hub

        return huggingface_hub
    except ImportError:
        if not bootstrap:
            raise AgentError("missing-hub",
                             f"huggingface_hub is not installed for {sys.executable}") from None
    site = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-warn-script-location", "--target", str(site), "huggingface_hub"]
    if subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr).returncode != 0:
        raise AgentError("bootstrap", f"could not pip install huggingface_hub with {sys.executable}")
    sys.path.insert(0, str(site))
    import huggingface_hub

    return huggingface_hub


def download(hub: Any, repo_id: str, revision: str | None, token: str | None, cache: Path) -> str:
    """Resolve `revision` to a commit, then download that exact commit; returns the commit."""
    if not valid_repo_id(repo_id):
        raise AgentError("bad-request", f"invalid repo id {repo_id!r}")
    if revision and not valid_revision(revision):
        raise AgentError("bad-request", f"invalid revision {revision!r}")
    auth: Any = token or False
    try:
        info = hub.HfApi().model_info(repo_id, revision=revision, token=auth)
        commit = info.sha
        if not commit or not COMMIT_RE.match(commit):
            raise AgentError("download", f"the Hub gave no commit for {repo_id}@{revision or 'main'}")
        hub.snapshot_download(repo_id, revision=commit, cache_dir=str(cache), token=auth)
    except AgentError:
        raise
    except Exception as exc:
        name = type(exc).__name__
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        kind = {"RepositoryNotFoundError": "repo-not-found", "RevisionNotFoundError": "revision-not-found",
                "GatedRepoError": "gated"}.get(name, "unauthorized" if " 401" in str(exc) or
                                               "401 " in str(exc) else "download")
        raise AgentError(kind, f"{repo_id}@{revision or 'main'}: {name}: {first}") from None
    ref_name = revision or "main"
    if ref_name != commit:  # point the user's ref at the commit, as a normal download would
        ref = cache / repo_folder_name(repo_id) / "refs" / ref_name
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return commit


def emit(out: BinaryIO, event: dict[str, Any]) -> None:
    out.write(json.dumps(event).encode() + b"\n")
    out.flush()


def serve(params: dict[str, Any], tmp: Path, inp: BinaryIO, out: BinaryIO) -> None:
    """Download and pack every repo, then send archives until told we are done."""
    clean_environment(tmp, params.get("endpoint"))
    hub = import_hub(tmp, bool(params.get("bootstrap")))
    emit(out, {"event": "hello", "huggingface_hub": getattr(hub, "__version__", "?"),
               "python": sys.version.split()[0]})
    cache, packed = tmp / "hub", tmp / "out"
    packed.mkdir()
    archives: dict[str, Path] = {}
    for spec in params["repos"]:
        repo_id, revision = spec["repo_id"], spec.get("revision")
        emit(out, {"event": "progress", "message": f"downloading {repo_id}@{revision or 'main'}"})
        commit = download(hub, repo_id, revision, params.get("token"), cache)
        name = archive_name(repo_id, commit)
        with open(packed / name, "wb") as fh:
            sha, size, files, refs = pack_repo(cache, repo_folder_name(repo_id), commit, fh)
        archives[name] = packed / name
        emit(out, {"event": "packed", "archive": name, "repo_id": repo_id, "commit": commit,
                   "sha256": sha, "size": size, "refs": refs,
                   "files": [f.to_dict() for f in files]})
    emit(out, {"event": "ready"})
    while line := inp.readline():
        cmd = json.loads(line)
        if cmd.get("cmd") == "done":
            return
        path = archives.get(cmd.get("archive", ""))
        if path is None:
            raise AgentError("bad-request", f"no archive {cmd.get('archive')!r}")
        if cmd.get("cmd") == "path":
            emit(out, {"event": "path", "path": str(path)})
        elif cmd.get("cmd") == "send":
            send(path, int(cmd.get("offset", 0)), cmd.get("prefix_sha256"), out)


def send(path: Path, offset: int, prefix_sha256: str | None, out: BinaryIO) -> None:
    """Stream `path` from `offset`, or from 0 when the client's prefix is not ours."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if offset:
            h = hashlib.sha256()
            left = offset if offset <= size else 0
            while left:
                chunk = fh.read(min(SEND_CHUNK, left))
                h.update(chunk)
                left -= len(chunk)
            if offset > size or h.hexdigest() != prefix_sha256:
                offset = 0
        fh.seek(offset)
        emit(out, {"event": "data", "offset": offset, "length": size - offset})
        while chunk := fh.read(SEND_CHUNK):
            out.write(chunk)
        out.flush()


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    tmp = Path(tempfile.mkdtemp(prefix="provision-agent-"))
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    log = open(tmp / "agent.log", "w")  # noqa: SIM115 - closed below; keeps stderr off the channel
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    try:
        params = json.loads(inp.readline() or b"{}")
        serve(params, tmp, inp, out)
    except AgentError as exc:
        emit(out, {"event": "error", "kind": exc.kind, "message": str(exc), "log": _tail(tmp)})
    except (BrokenPipeError, ConnectionResetError, SystemExit):
        pass
    except Exception as exc:
        with contextlib.suppress(OSError):
            emit(out, {"event": "error", "kind": "agent", "message": f"{type(exc).__name__}: {exc}",
                       "log": _tail(tmp)})
    finally:
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _tail(tmp: Path) -> str:
    try:
        return (tmp / "agent.log").read_text(errors="replace")[-2000:]
    except OSError:
        return ""


if __name__ == "__main__":
    main()
