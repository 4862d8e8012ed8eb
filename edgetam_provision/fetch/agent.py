"""The program `provision fetch` runs on the clean host (or, with --local, here).

Shipped as source over the SSH channel's stdin, after `layout.py` and `pack.py` (so packing is the
very same code on both ends), and run by one fixed command: no repo id, revision or token ever
reaches a shell. Needs the standard library and huggingface_hub (0.2x-0.3x, or >= 1.0) only.

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

Credentials are cleaned before huggingface_hub is imported: a private temporary HF_HOME and HOME,
no HF_TOKEN / HUGGING_FACE_HUB_TOKEN, implicit token disabled, ``NETRC=/dev/null`` (requests-based
huggingface_hub sends Basic auth from ~/.netrc even with token=False), no shared blob store. A token
for a gated repo arrives in the parameters and is passed as an argument, never through the
environment.

Resumable on the host: each repo revision downloads into a work folder of the account's own
(``~/.cache/edgetam-provision/work/<repo>--<revision>``), reused by the next run after a cut and
removed once the client has pulled its archive (``fresh`` discards it first). The client going
away (stdin closed: Ctrl-C, timeout, cut connection) stops the agent within a second; its private
temporary folder is removed on every exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

with contextlib.suppress(ImportError):  # shipped: layout, pack and live ran just before, in this namespace
    from ..archive.pack import PackPlan, pack_repo
    from ..hub.layout import (
        COMMIT_RE,
        FileRecord,
        archive_name,
        repo_folder_name,
        valid_repo_id,
        valid_revision,
    )
    from .live import Background, pack_streaming, stream_bound
CREDENTIAL_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH",
                   "HF_HUB_ENABLE_HF_TRANSFER")
SEND_CHUNK = 8 * 1024 * 1024  # fsutil.CHUNK: the agent runs alone on the host, so it cannot import it
PROGRESS_EVERY_S = 1.0
REPO_TYPES = ("model", "dataset")


class AgentError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Channel:
    """stdout events (from any thread) and stdin commands (read by a watcher thread, so that a
    closed stdin — the client is gone — is noticed at once, even in the middle of a download)."""

    def __init__(self, inp: BinaryIO, out: BinaryIO, on_gone: Any) -> None:
        self.out, self.lock, self.commands = out, threading.Lock(), queue.Queue()  # type: queue.Queue
        self.on_gone = on_gone
        threading.Thread(target=self._watch, args=(inp,), daemon=True).start()

    def _watch(self, inp: BinaryIO) -> None:
        finishing = False  # after "done" the client may close at once: let the main thread finish
        while line := inp.readline():
            finishing = finishing or b'"done"' in line  # the main thread parses (and refuses junk)
            self.commands.put(line)
        if not finishing:
            self.on_gone()

    def emit(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json.dumps(event).encode() + b"\n")
            self.out.flush()

    def emit_data(self, data: bytes) -> None:
        """One ``chunk`` of an archive sent while it is packed: a header line, then the bytes."""
        with self.lock:
            self.out.write(json.dumps({"event": "chunk", "length": len(data)}).encode() + b"\n")
            self.out.write(data)
            self.out.flush()

    def command(self) -> dict[str, Any]:
        return json.loads(self.commands.get())


def work_root() -> Path:
    """This account's work folder (read before the private HOME replaces the real one)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgetam-provision" / "work"


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


def import_hub(tmp: Path, bootstrap: bool, say: Any = lambda _: None) -> Any:
    """Import huggingface_hub, installing it into the temporary folder when asked to."""
    try:
        import huggingface_hub

        return huggingface_hub
    except ImportError:
        if not bootstrap:
            raise AgentError("missing-hub",
                             f"huggingface_hub is not installed for {sys.executable}") from None
    site = tmp / "site"
    say(f"installing huggingface_hub for Python {sys.version.split()[0]} into a temporary folder (pip)…")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-warn-script-location", "--target", str(site), "huggingface_hub"]
    if subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr).returncode != 0:
        raise AgentError("bootstrap", f"could not pip install huggingface_hub with {sys.executable}")
    sys.path.insert(0, str(site))
    import huggingface_hub

    return huggingface_hub


def _classify(exc: Exception) -> str:
    name = type(exc).__name__
    return {"RepositoryNotFoundError": "repo-not-found", "RevisionNotFoundError": "revision-not-found",
            "GatedRepoError": "gated"}.get(name, "unauthorized" if " 401" in str(exc) or "401 " in str(exc)
                                           else "download")


#: a request that never reached the endpoint: its name did not resolve, or no connection was made
#: (httpx's ConnectError/ConnectTimeout; requests' ConnectionError wrapping urllib3's errors)
UNREACHABLE_TYPES = ("ConnectError", "ConnectTimeout", "NameResolutionError", "NewConnectionError",
                     "gaierror", "ConnectionRefusedError")
UNREACHABLE_WORDS = ("NameResolutionError", "NewConnectionError", "Failed to establish a new connection",
                     "Failed to resolve", "ConnectTimeoutError")
ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^)'\"]+")


def _unreachable(exc: BaseException | None) -> str | None:
    """Why the endpoint could not be reached (from the exception or those it came from), or None
    when the request got through to it."""
    for _ in range(8):
        if exc is None:
            return None
        text = f"{type(exc).__name__}: {exc}"
        if type(exc).__name__ in UNREACHABLE_TYPES or any(w in text for w in UNREACHABLE_WORDS):
            said = ERRNO_RE.search(text)
            return said.group(0).strip() if said else type(exc).__name__
        exc = exc.__cause__ or exc.__context__
    return None


def _folder_bytes(folder: Path) -> int:
    """Bytes downloaded so far into a repo's cache folder (finished blobs and .incomplete ones)."""
    total = 0
    for p in (folder / "blobs").glob("*") if (folder / "blobs").is_dir() else ():
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


def resolve(hub: Any, spec: dict[str, Any], auth: Any) -> tuple[str, list[FileRecord] | None]:
    """The commit the revision names, and the Hub's listing of its files (None when not given)."""
    repo_id, revision, repo_type = spec["repo_id"], spec.get("revision"), spec.get("repo_type", "model")
    if not valid_repo_id(repo_id) or repo_type not in REPO_TYPES:
        raise AgentError("bad-request", f"invalid repo id {repo_id!r} ({repo_type})")
    if revision and not valid_revision(revision):
        raise AgentError("bad-request", f"invalid revision {revision!r}")
    with _hub_errors(f"{repo_id}@{revision or 'main'}"):
        commit = hub.HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type, token=auth).sha
    if not commit or not COMMIT_RE.match(commit):
        raise AgentError("download", f"the Hub gave no commit for {repo_id}@{revision or 'main'}")
    return commit, _listing(hub, repo_id, commit, repo_type, auth)


@contextlib.contextmanager
def _hub_errors(label: str) -> Any:
    """huggingface_hub's exceptions as the agent's error kinds."""
    try:
        yield
    except AgentError:
        raise
    except Exception as exc:
        why = _unreachable(exc)
        if why is not None:  # the endpoint huggingface_hub read at import: ours, or the host's own
            endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
            raise AgentError("endpoint-unreachable", f"{label}: cannot resolve or reach {endpoint} "
                             f"({why})") from None
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise AgentError(_classify(exc), f"{label}: {type(exc).__name__}: {first}") from None


def download(hub: Any, spec: dict[str, Any], auth: Any, commit: str, total: int | None, cache: Path,
             chan: Channel) -> None:
    """Download that exact commit into `cache`, reporting progress every second, then point the
    user's ref at it, as a normal download would."""
    repo_id, revision, repo_type = spec["repo_id"], spec.get("revision"), spec.get("repo_type", "model")
    folder = cache / repo_folder_name(repo_id, repo_type)
    done = threading.Event()

    def report() -> None:
        while not done.wait(PROGRESS_EVERY_S):
            chan.emit({"event": "download", "repo_id": repo_id, "bytes": _folder_bytes(folder),
                       "total": total})

    threading.Thread(target=report, daemon=True).start()
    try:
        with _hub_errors(f"{repo_id}@{revision or 'main'}"):
            hub.snapshot_download(repo_id, revision=commit, repo_type=repo_type, cache_dir=str(cache),
                                  token=auth, allow_patterns=spec.get("include") or None,
                                  ignore_patterns=spec.get("exclude") or None)
    finally:
        done.set()
    ref_name = revision or "main"
    if ref_name != commit:
        ref = folder / "refs" / ref_name
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)


def _listing(hub: Any, repo_id: str, commit: str, repo_type: str, auth: Any) -> list[FileRecord] | None:
    """The revision's files (path, blob, size) from the Hub's tree, when the Hub says."""
    try:
        files = hub.HfApi().list_repo_tree(repo_id, revision=commit, repo_type=repo_type, recursive=True,
                                           token=auth)
        listed = []
        for f in files:
            if getattr(f, "blob_id", None) is None:
                continue  # a folder
            lfs = getattr(f, "lfs", None)
            sha = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
            listed.append(FileRecord(f.path, sha or f.blob_id, int(f.size)))
        return listed
    except Exception:
        return None


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
                   + (_resuming(hub) if any(work.iterdir()) else "")})
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


def _resuming(hub: Any) -> str:
    """What a rerun keeps of a cut download, as the host's huggingface_hub does it: before 1.18 it
    continues a file cut midway (Range); from 1.18 it keeps finished files and starts a cut one over."""
    try:
        major, minor = (int(x) for x in str(hub.__version__).split(".")[:2])
    except (AttributeError, ValueError):
        return " (resuming the earlier download)"
    if (major, minor) >= (1, 18):
        return (f" (resuming the earlier download: finished files are kept; huggingface_hub "
                f"{hub.__version__} starts a file that was cut over)")
    return " (resuming the earlier download, cut files included)"


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
            patterns = f"--include {spec.get('include') or '-'} / --exclude {spec.get('exclude') or '-'}"
            raise AgentError("no-match", f"no file of {repo_id}@{commit[:12]} matches {patterns}")
        packed = _pack_to_file(work, name, folder, commit, with_tree=not filtered, chan=chan)
    sha, size, files, refs = packed
    return name, {"event": "packed", "archive": name, "repo_id": repo_id, "repo_type": repo_type,
                  "commit": commit, "sha256": sha, "size": size, "refs": refs,
                  "files": [f.to_dict() for f in files], "streamed": streamed}


def _archive_file(work: Path, name: str, packed: dict[str, Any], chan: Channel | None = None) -> Any:
    """The archive's file on this host; one that was only sent (streamed) is packed when first
    asked for (a client that did not get it whole), to the same bytes, or the agent says not."""

    def path() -> Path:
        if not (work / name).exists():
            folder = repo_folder_name(packed["repo_id"], packed["repo_type"])
            if _pack_to_file(work, name, folder, packed["commit"], chan=chan)[0] != packed["sha256"]:
                (work / name).unlink()
                raise AgentError("agent", f"{name} packed again to other bytes than were sent")
        return work / name

    return path


def _pack_to_file(work: Path, name: str, folder: str, commit: str, with_tree: bool = True,
                  chan: Channel | None = None) -> tuple[str, int, list[FileRecord], list[str]]:
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


def send(path: Path, offset: int, prefix_sha256: str | None, chan: Channel) -> None:
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
        with chan.lock:
            chan.out.write(json.dumps({"event": "data", "offset": offset, "length": size - offset}).encode()
                           + b"\n")
            while chunk := fh.read(SEND_CHUNK):
                chan.out.write(chunk)
            chan.out.flush()


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

    def gone() -> None:  # the client closed the channel: stop now, the work folder stays for resume
        shutil.rmtree(tmp, ignore_errors=True)
        os._exit(0)

    try:
        params = json.loads(inp.readline() or b"{}")
        chan = Channel(inp, out, gone)
        serve(params, tmp, chan)
    except AgentError as exc:
        with contextlib.suppress(OSError):
            _emit_raw(out, {"event": "error", "kind": exc.kind, "message": str(exc)[:2000],
                            "log": _tail(tmp)})
    except (BrokenPipeError, ConnectionResetError, SystemExit):
        pass
    except Exception as exc:
        with contextlib.suppress(OSError):
            _emit_raw(out, {"event": "error", "kind": "agent",
                            "message": f"{type(exc).__name__}: {exc}"[:2000],
                            "log": _tail(tmp)})
    finally:
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _emit_raw(out: BinaryIO, event: dict[str, Any]) -> None:
    """An event after the channel is done with (or before it exists): the last thing we say."""
    out.write(json.dumps(event).encode() + b"\n")
    out.flush()


def _tail(tmp: Path) -> str:
    try:
        return (tmp / "agent.log").read_text(errors="replace")[-2000:]
    except OSError:
        return ""


if __name__ == "__main__":
    main()
