"""The Hub, through the host's huggingface_hub: resolve a revision to its commit and listing,
download that commit (saying how far it got every second), and its errors as the agent's kinds."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Any

from .channel import PROGRESS_EVERY_S, AgentError, Channel
from .layout import COMMIT_RE, FileRecord, repo_folder_name, valid_repo_id, valid_revision

REPO_TYPES = ("model", "dataset")


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


def resuming_note(hub: Any) -> str:
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


