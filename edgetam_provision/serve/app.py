"""The verified cache as a read-only Hugging Face endpoint: what is served, and the HTTP answers.

`build_index` checks every listed revision (every blob hashed) and keeps, per repo, its refs and
each file's blob path and size. The ASGI app answers only from that index: a URL is split into
segments, each decoded once, and looked up in dictionaries; no path is ever built from a request,
so nothing outside the index can be read, whatever the URL says. Before each file is sent, its
blob is checked by size; a blob that changed since start makes the revision answer 503.

The subset of the Hub API huggingface_hub 0.36 (requests) and 2.x (httpx) use to download: repo
info at a revision, the file tree, HEAD/GET ``resolve`` with ``ETag`` / ``X-Linked-Etag`` /
``X-Linked-Size`` / ``X-Repo-Commit``, Range requests, and the ``X-Error-Code`` 404s. Requests'
Authorization headers are ignored and never logged; GET and HEAD are the only methods.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..errors import UsageError
from ..hub.cache import RepoSpec, check_revision, list_refs, resolve_commit, scan_cache
from ..hub.layout import repo_folder_name

MAX_URL = 4096
CHUNK = 1024 * 1024
AREAS = {"models": "model", "datasets": "dataset"}


@dataclass(frozen=True)
class ServedFile:
    path: str
    blob: str
    size: int
    file: Path

    @property
    def lfs(self) -> bool:
        return len(self.blob) == 64

    def oid(self) -> str:
        """The git blob id the Hub lists: of the file itself, or of its LFS pointer."""
        if not self.lfs:
            return self.blob
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.blob}\nsize {self.size}\n"
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode(), usedforsecurity=False).hexdigest()


@dataclass
class ServedRepo:
    repo_id: str
    repo_type: str
    refs: dict[str, str] = field(default_factory=dict)  # ref name -> commit
    revisions: dict[str, dict[str, ServedFile]] = field(default_factory=dict)  # commit -> path -> file
    damaged: dict[str, str] = field(default_factory=dict)  # commit -> why

    def commit_for(self, rev: str) -> str | None:
        if rev in self.revisions or rev in self.damaged:
            return rev
        return self.refs.get(rev)


@dataclass
class MirrorIndex:
    repos: dict[tuple[str, str], ServedRepo] = field(default_factory=dict)  # (type, id) -> repo

    def summary(self) -> list[dict[str, Any]]:
        return [{"repo_id": r.repo_id, "repo_type": r.repo_type, "refs": r.refs,
                 "commits": sorted(r.revisions), "damaged": r.damaged} for r in self.repos.values()]


def build_index(cache: Path, specs: list[RepoSpec], all_public: bool,
                progress: Callable[[str], None]) -> MirrorIndex:
    """Check and index what is served: the listed revisions, or (all_public) every cached one."""
    index = MirrorIndex()
    wanted = [(s.repo_type, s.repo_id, s.revision) for s in specs]
    if all_public:
        wanted = [(st.repo_type, st.repo_id, st.commit) for st in scan_cache(cache, hash_blobs=False)]
    for repo_type, repo_id, revision in wanted:
        commit = resolve_commit(cache, repo_id, revision, repo_type)
        state = check_revision(cache, repo_id, commit, repo_type=repo_type)
        repo = index.repos.setdefault((repo_type, repo_id), ServedRepo(repo_id, repo_type))
        repo_dir = cache / repo_folder_name(repo_id, repo_type)
        refs = {n: c for n, c in list_refs(repo_dir).items() if c == commit}
        if revision and revision != commit:
            refs.setdefault(revision, commit)
        repo.refs.update(refs)
        if not state.ok or not state.files:
            repo.damaged[commit] = state.problems[0] if state.problems else "no files"
            progress(f"NOT serving {repo_id}@{commit[:12]}: {repo.damaged[commit]}")
            continue
        snap = repo_dir / "snapshots" / commit
        repo.revisions[commit] = {f.path: ServedFile(f.path, f.blob, f.size, (snap / f.path).resolve())
                                  for f in state.files}
        progress(f"serving {repo_type} {repo_id}@{commit[:12]} ({len(state.files)} files, every blob hashed)")
    return index


def _segments(raw_path: str) -> list[str] | None:
    """The URL path split into segments, each decoded once; None for anything odd."""
    if len(raw_path) > MAX_URL or not raw_path.startswith("/"):
        return None
    parts = [unquote(p) for p in raw_path[1:].split("/")]
    if any(p in ("", ".", "..") for p in parts[:-1]) or any(not p.isprintable() or "\\" in p for p in parts):
        return None
    return parts


class MirrorApp:
    """The ASGI application. `log` gets one line per request: method, path, status, bytes."""

    def __init__(self, index: MirrorIndex, log: Callable[[str], None]) -> None:
        self.index, self.log = index, log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        method, raw = scope["method"], scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        status, sent = await self.route(method, raw.split("?", 1)[0], scope, send)
        self.log(f"{method} {raw[:200]} {status} {sent} {1000 * (time.perf_counter() - t0):.1f}ms")

    async def route(self, method: str, raw_path: str, scope: dict[str, Any], send: Any) -> tuple[int, int]:
        if method not in ("GET", "HEAD"):
            return await self.error(send, 405, "MethodNotAllowed", "this mirror is read-only", method)
        parts = _segments(raw_path)
        if parts is None:
            return await self.error(send, 400, "BadRequest", "malformed path", method)
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in AREAS:
            return await self.api(method, AREAS[parts[1]], parts[2:], send)
        kind = "model"
        if parts[:1] == ["datasets"]:
            kind, parts = "dataset", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            return await self.resolve(method, kind, parts, scope, send)
        return await self.error(send, 404, "EntryNotFound", "no such endpoint", method)

    def lookup(self, kind: str, org: str, name: str) -> ServedRepo | None:
        return self.index.repos.get((kind, f"{org}/{name}"))

    async def api(self, method: str, kind: str, parts: list[str], send: Any) -> tuple[int, int]:
        repo = self.lookup(kind, parts[0], parts[1])
        if repo is None:
            return await self.error(send, 404, "RepoNotFound", f"Repository {parts[0]}/{parts[1]} not found",
                                    method)
        what = parts[2] if len(parts) > 2 else "revision"
        rev = unquote(parts[3]) if len(parts) > 3 else "main"
        commit = repo.commit_for(rev)
        if commit is None:
            return await self.error(send, 404, "RevisionNotFound", f"Invalid rev id: {rev}", method)
        if commit in repo.damaged:
            return await self.error(send, 503, "Damaged", f"{repo.repo_id}@{commit[:12]} is damaged: "
                                    f"{repo.damaged[commit]}", method)
        files = repo.revisions[commit]
        if what == "revision" and len(parts) <= 4:
            body = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": commit, "private": False,
                    "gated": False, "disabled": False,
                    "siblings": [{"rfilename": p, "size": f.size} for p, f in sorted(files.items())]}
        elif what == "tree":
            prefix = "/".join(parts[4:]).strip("/")
            body = [self.tree_entry(f) for p, f in sorted(files.items())
                    if not prefix or p.startswith(prefix + "/")]
        else:
            return await self.error(send, 404, "EntryNotFound", "no such endpoint", method)
        return await self.reply(send, 200, {"content-type": "application/json"}, json.dumps(body).encode(),
                                method)

    @staticmethod
    def tree_entry(f: ServedFile) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "path": f.path, "size": f.size, "oid": f.oid()}
        if f.lfs:
            entry["lfs"] = {"oid": f.blob, "size": f.size, "pointerSize": 134}
        return entry

    async def resolve(self, method: str, kind: str, parts: list[str], scope: dict[str, Any],
                      send: Any) -> tuple[int, int]:
        repo = self.lookup(kind, parts[0], parts[1])
        if repo is None:
            return await self.error(send, 404, "RepoNotFound", f"Repository {parts[0]}/{parts[1]} not found",
                                    method)
        commit = repo.commit_for(parts[3])
        if commit is None:
            return await self.error(send, 404, "RevisionNotFound", f"Invalid rev id: {parts[3]}", method)
        if commit in repo.damaged:
            return await self.error(send, 503, "Damaged", f"{repo.repo_id}@{commit[:12]} is damaged: "
                                    f"{repo.damaged[commit]}", method)
        served = repo.revisions[commit].get("/".join(parts[4:]))
        if served is None:
            return await self.error(send, 404, "EntryNotFound", f"{'/'.join(parts[4:])[:200]} does not exist",
                                    method)
        try:
            size_now = served.file.stat().st_size
        except OSError:
            size_now = -1
        if size_now != served.size:
            why = f"blob {served.blob[:16]}… changed since the mirror started (damaged); restore it"
            repo.damaged[commit] = why
            self.log(f"NOT serving {repo.repo_id}@{commit[:12]} any more: {why}")
            return await self.error(send, 503, "Damaged", f"{repo.repo_id}@{commit[:12]}: {why}", method)
        headers = {"etag": f'"{served.blob}"', "x-repo-commit": commit, "accept-ranges": "bytes",
                   "content-type": "application/octet-stream"}
        if served.lfs:
            headers.update({"x-linked-etag": f'"{served.blob}"', "x-linked-size": str(served.size)})
        start, end = _range(dict(scope["headers"]).get(b"range", b"").decode("latin-1"), served.size)
        if start is None:
            return await self.reply(send, 416, {"content-range": f"bytes */{served.size}"}, b"", method)
        status = 206 if end - start < served.size or start else 200
        if status == 206:
            headers["content-range"] = f"bytes {start}-{end - 1}/{served.size}"
        headers["content-length"] = str(end - start)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return status, 0
        sent = 0
        with open(served.file, "rb") as fh:
            fh.seek(start)
            while sent < end - start:
                chunk = fh.read(min(CHUNK, end - start - sent))
                if not chunk:
                    break
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": sent < end - start})
        if sent < end - start:
            await send({"type": "http.response.body", "body": b""})
        return status, sent

    async def error(self, send: Any, status: int, code: str, message: str, method: str) -> tuple[int, int]:
        body = json.dumps({"error": message}).encode()
        return await self.reply(send, status, {"content-type": "application/json", "x-error-code": code,
                                               "x-error-message": message[:200].encode("ascii", "replace")
                                               .decode()}, body, method)

    @staticmethod
    async def reply(send: Any, status: int, headers: dict[str, str], body: bytes,
                    method: str) -> tuple[int, int]:
        headers = {**headers, "content-length": str(len(body))}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        return status, 0 if method == "HEAD" else len(body)


def _range(header: str, size: int) -> tuple[int | None, int]:
    """(start, end) of one ``bytes=`` range (end exclusive); the whole file without a header."""
    if not header:
        return 0, size
    try:
        unit, _, spec = header.partition("=")
        first, _, last = spec.split(",")[0].strip().partition("-")
        if unit.strip() != "bytes":
            raise ValueError
        if not first:  # a suffix: the last N bytes
            n = int(last)
            return max(0, size - n), size
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    except ValueError:
        return None, 0
    if start >= size or start < 0 or end <= start:
        return (0, 0) if size == 0 and start == 0 else (None, 0)
    return start, end


def check_bind(host: str) -> str | None:
    """A warning for any address but loopback (None when it binds loopback only)."""
    if host in ("127.0.0.1", "::1", "localhost"):
        return None
    return (f"WARNING: serving on {host}, reachable from other machines: everything listed is readable "
            "by anyone who can reach this port (read-only, public repos only)")


def stderr_log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def require_server() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise UsageError("provision serve needs an HTTP server (uvicorn), which is not installed",
                         "pip install 'edgetam-provision[serve]', or uv sync --extra serve") from None
    return uvicorn
