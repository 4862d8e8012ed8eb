"""The program `provision fetch` runs on the clean host (or, with --local, here).

Sent with the rest of this package over the SSH channel's stdin on every run (so packing is the
very same code on both ends) and started by one fixed command (`fetch/shipped.py`'s bootstrap): no
repo id, revision or token ever reaches a shell. Needs the standard library and huggingface_hub
(0.2x-0.3x, or >= 1.0) only.

Protocol: stdin carries one JSON line of parameters, then JSON commands; stdout carries JSON
event lines, and after a ``data`` or ``chunk`` event exactly ``length`` raw bytes of an archive.
While the host downloads, a ``download`` event (bytes so far, total when known) goes out every
second: the client treats it as life, so only true silence runs into its deadline.

Streamed (the client asks with ``stream``; it has no part of the archive; the Hub listed the
revision): ``stream`` names the archive and the most bytes it will have (from the listing, before
its first byte), ``chunk`` events carry it while it is packed during the download, ``packed`` (with
``streamed``) gives its sha256 and size; ``stream-void`` drops what was
sent, and the archive is packed and offered as below. Otherwise ``packed`` events, ``ready``, and
the client asks for each archive (``send`` from an offset, or ``path`` for its own ssh/SFTP).

Credentials are cleaned before huggingface_hub is imported (`environment`). A token for a gated
repo arrives in the parameters and is passed as an argument, never through the environment.

Resumable on the host: each repo revision downloads into a work folder of the account's own
(``~/.cache/edgetam-provision/work/<repo>--<revision>``), reused by the next run after a cut and
removed once the client has pulled its archive (``fresh`` discards it first). The client going
away (stdin closed: Ctrl-C, timeout, cut connection) stops the agent within a second; its private
temporary folder is removed on every exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .channel import PROGRESS_EVERY_S, AgentError, Channel, emit_raw, send
from .download import download, resolve, resuming_note
from .environment import clean_environment, import_hub, work_root
from .layout import archive_name, repo_folder_name
from .live import Background, pack_streaming, stream_bound
from .pack import PackPlan, PackResult, pack_repo


def serve(params: dict[str, Any], tmp: Path, chan: Channel) -> None:
    """Download and pack every repo, then send archives until told we are done."""
    root = work_root()
    clean_environment(tmp, params.get("endpoint"))
    hub = import_hub(tmp, bool(params.get("bootstrap")),
                     lambda message: chan.emit({"event": "progress", "message": message}))
    chan.emit({"event": "hello", "huggingface_hub": getattr(hub, "__version__", "?"),
               "python": sys.version.split()[0]})
    archives: dict[str, Any] = {}  # name -> its file on this host (packed now if it was only sent)
    works: list[Path] = []
    for spec in params["repos"]:
        repo_id, revision = spec["repo_id"], spec.get("revision")
        work = root / (repo_folder_name(repo_id, spec.get("repo_type", "model")) + "--"
                       + (revision or "main").replace("/", "--"))
        if params.get("fresh"):
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        works.append(work)
        chan.emit({"event": "progress", "message": f"downloading {repo_id}@{revision or 'main'}"
                   + (resuming_note(hub) if any(work.iterdir()) else "")})
        try:
            name, packed = download_and_pack(hub, spec, params, work, chan)
        except BaseException:
            if work.is_dir() and not any(work.iterdir()):  # nothing to resume: leave no empty folder
                work.rmdir()
            raise
        archives[name] = _archive_file(work, name, packed, chan)
        chan.emit(packed)
    chan.emit({"event": "ready"})
    while True:
        cmd = chan.command()
        if cmd.get("cmd") == "done":
            for work in works:  # pulled and checked by the client: nothing left to resume
                shutil.rmtree(work, ignore_errors=True)
            chan.emit({"event": "bye"})
            return
        archive = archives.get(cmd.get("archive", ""))
        if archive is None:
            raise AgentError("bad-request", f"no archive {cmd.get('archive')!r}")
        path = archive()
        if cmd.get("cmd") == "path":
            chan.emit({"event": "path", "path": str(path)})
        elif cmd.get("cmd") == "send":
            send(path, int(cmd.get("offset", 0)), cmd.get("prefix_sha256"), chan)


def download_and_pack(hub: Any, spec: dict[str, Any], params: dict[str, Any], work: Path,
                      chan: Channel) -> tuple[str, dict[str, Any]]:
    """Download one revision into `work` and pack it there; returns its name and ``packed`` event.

    When the client asked for it, has no part of this archive, and the Hub listed the revision's
    files, the archive is packed and sent while the download runs (``stream``, ``chunk``... events):
    it is the very archive a pack after the download writes. Should the download not match the
    listing, ``stream-void`` tells the client to drop those bytes, and the revision is packed anew.
    """
    repo_id, repo_type = spec["repo_id"], spec.get("repo_type", "model")
    auth: Any = params.get("token") or False
    cache, folder = work / "hub", repo_folder_name(repo_id, repo_type)
    filtered = bool(spec.get("include") or spec.get("exclude"))
    commit, listed = resolve(hub, spec, auth)
    name = archive_name(repo_id, commit, repo_type=repo_type, include=spec.get("include") or (),
                        exclude=spec.get("exclude") or ())
    total = sum(f.size for f in listed) if listed is not None else None
    fetch = Background(lambda: download(hub, spec, auth, commit, total, cache, chan))
    live = (bool(params.get("stream")) and listed is not None and not filtered
            and name not in params.get("have", ()))
    packed = None
    if live:
        assert listed is not None
        plan, ref = PackPlan.from_files(listed), spec.get("revision") or "main"
        bound = stream_bound(folder, commit, plan, None if ref == commit else ref)
        chan.emit({"event": "stream", "archive": name, "size": bound})
        fetch.start()
        packed = pack_streaming(cache, folder, commit, plan, fetch, chan, bound)
    streamed = packed is not None
    if packed is None:
        if not live:
            fetch.run()  # here, in this thread
        if fetch.error is not None:
            raise fetch.error
        snapshot = cache / folder / "snapshots" / commit
        if filtered and not (snapshot.is_dir() and any(p.is_file() for p in snapshot.rglob("*"))):
            shutil.rmtree(work, ignore_errors=True)  # nothing worth resuming
            # the client's words for its options: the CLI says them as --include / --exclude
            patterns = (f"include patterns {spec.get('include') or '-'} / "
                        f"exclude patterns {spec.get('exclude') or '-'}")
            raise AgentError("no-match", f"no file of {repo_id}@{commit[:12]} matches {patterns}")
        packed = _pack_to_file(work, name, folder, commit, with_tree=not filtered, chan=chan)
    return name, {"event": "packed", "archive": name, "repo_id": repo_id, "repo_type": repo_type,
                  "commit": commit, "sha256": packed.sha256, "size": packed.size, "refs": packed.refs,
                  "files": [f.to_dict() for f in packed.files], "streamed": streamed}


def _archive_file(work: Path, name: str, packed: dict[str, Any], chan: Channel | None = None) -> Any:
    """The archive's file on this host; one that was only sent (streamed) is packed when first
    asked for (a client that did not get it whole), to the same bytes, or the agent says not."""

    def path() -> Path:
        if not (work / name).exists():
            folder = repo_folder_name(packed["repo_id"], packed["repo_type"])
            if _pack_to_file(work, name, folder, packed["commit"], chan=chan).sha256 != packed["sha256"]:
                (work / name).unlink()
                raise AgentError("agent", f"{name} packed again to other bytes than were sent")
        return work / name

    return path


def _pack_to_file(work: Path, name: str, folder: str, commit: str, with_tree: bool = True,
                  chan: Channel | None = None) -> PackResult:
    """Pack a downloaded revision into ``work/name`` (through ``name.packing``, renamed when whole),
    saying how far it got every few seconds: a big pack is not silence to the client's deadline."""
    part = work / f"{name}.packing"
    with open(part, "wb") as fh, _telling(chan, lambda: f"packing {name}: {_size(part)} so far"):
        packed = pack_repo(work / "hub", folder, commit, fh, with_tree=with_tree)
    os.replace(part, work / name)
    return packed


@contextlib.contextmanager
def _telling(chan: Channel | None, what: Any, every: float = 5 * PROGRESS_EVERY_S) -> Any:
    """While the block runs, a ``progress`` event with `what()` every `every` seconds; none after."""
    done = threading.Event()

    def tell() -> None:
        while not done.wait(every):
            with contextlib.suppress(OSError, ValueError):
                chan.emit({"event": "progress", "message": what()})  # type: ignore[union-attr]

    teller = threading.Thread(target=tell, name="provision-telling", daemon=True)
    if chan is not None:
        teller.start()
    try:
        yield
    finally:
        done.set()
        if teller.is_alive():
            teller.join()


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 1e6:.0f} MB"
    except OSError:
        return "?"


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(private: str | None = None) -> None:
    """Serve the client on stdin/stdout. `private`: the temporary folder the bootstrap made (it holds
    this package); removed on every exit, with all the agent put there (its log, home, --bootstrap's
    install)."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    tmp = Path(private or tempfile.mkdtemp(prefix="provision-agent-"))
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    log = open(tmp / "agent.log", "w")  # noqa: SIM115 - closed below; keeps stderr off the channel
    os.dup2(log.fileno(), 2)
    sys.stderr = log

    def gone() -> None:  # the client closed the channel: stop now, the work folder stays for resume
        shutil.rmtree(tmp, ignore_errors=True)
        os._exit(0)

    try:
        params = json.loads(inp.readline() or b"{}")
        chan = Channel(inp, out, gone)
        serve(params, tmp, chan)
    except AgentError as exc:
        with contextlib.suppress(OSError):
            emit_raw(out, {"event": "error", "kind": exc.kind, "message": str(exc)[:2000],
                           "log": _tail(tmp)})
    except (BrokenPipeError, ConnectionResetError, SystemExit):
        pass
    except Exception as exc:
        with contextlib.suppress(OSError):
            emit_raw(out, {"event": "error", "kind": "agent",
                           "message": f"{type(exc).__name__}: {exc}"[:2000],
                           "log": _tail(tmp)})
    finally:
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(OSError):
        out.flush()
    # Not the interpreter's shutdown: the stdin watcher thread is blocked in a read and holds stdin's
    # lock, and Python 3.8 then aborts ("could not acquire lock ... at interpreter shutdown").
    os._exit(0)


def _tail(tmp: Path) -> str:
    try:
        return (tmp / "agent.log").read_text(errors="replace")[-2000:]
    except OSError:
        return ""


if __name__ == "__main__":
    main()
