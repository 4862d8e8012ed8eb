"""The verified cache as a read-only Hugging Face endpoint: what is served, and the HTTP answers.

`build_index` checks every listed revision (every blob hashed) and keeps, per repo, its refs and
each file's blob, opened by its name in the repo's ``blobs/`` (never through the snapshot's links,
which could lead elsewhere than what was hashed). The ASGI app answers only from that index: a URL
is split into segments, each decoded once, and looked up in dictionaries; no path is ever built
from a request, so nothing outside the index can be read, whatever the URL says.

A blob that changes after it was hashed is never served as the genuine one. Each blob's identity
(device, inode, size, mtime and ctime, in ns) is kept with its hash; before a response, a blob
whose identity changed is hashed again (in a thread), and a mismatch makes the revision answer 503.
A change while a file is being sent is caught too: the last piece is held back and sent only if the
identity is still the one hashed once every byte was read; otherwise the connection is cut, so a
client fails instead of storing wrong bytes under the blob's name. Sound because any write changes
the ctime, which no user can set back: bytes changed before we read them show in the ctime we
compare after reading them. It costs a stat per response, where hashing while sending would cost
a core per client.

The subset of the Hub API huggingface_hub 0.36 (requests) and 2.x (httpx) use to download: repo
info at a revision, the file tree, HEAD/GET ``resolve`` with ``ETag`` / ``X-Linked-Etag`` /
``X-Linked-Size`` / ``X-Repo-Commit``, Range requests, and the ``X-Error-Code`` 404s. Requests'
Authorization headers are ignored and never logged; GET and HEAD are the only methods.
"""

from __future__ import annotations

import asyncio
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
from ..hub.cache import blob_matches, check_revision, list_refs, resolve_commit, scan_cache
from ..hub.layout import repo_folder_name
from ..repos import RepoSpec

MAX_URL = 4096
CHUNK = 1024 * 1024
AREAS = {"models": "model", "datasets": "dataset"}


@dataclass
class ServedFile:
    path: str
    blob: str
    size: int
    file: Path  # the blob itself, by name (resolved inside the cache)
    identity: tuple[int, ...] = ()  # stat of `file` when its bytes were last hashed

    def current(self) -> tuple[int, ...]:
        st = self.file.stat()
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

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
        repo.revisions[commit] = {f.path: _served(cache, repo_dir, f.path, f.blob, f.size)
                                  for f in state.files}
        progress(f"serving {repo_type} {repo_id}@{commit[:12]} ({len(state.files)} files, every blob hashed)")
    return index


def _served(cache: Path, repo_dir: Path, path: str, blob: str, size: int) -> ServedFile:
    """A file served from its blob by name; its identity taken now, right after the hash (a change
    in between is caught when the whole file is sent, by the hash while sending)."""
    served = ServedFile(path, blob, size, (repo_dir / "blobs" / blob).resolve())
    served.identity = served.current()
    return served


def _hashes_to_its_name(served: ServedFile) -> bool:
    """Hash the blob again (it changed on disk): still its name's bytes? Updates its identity."""
    try:
        before = served.current()
        ok = blob_matches(served.file, served.blob) and served.current() == before
    except OSError:
        return False
    if ok:
        served.identity = before
    return ok


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
        self.requests, self.bytes_sent = 0, 0

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
        try:
            status, sent = await self.route(method, raw.split("?", 1)[0], scope, send)
        except BlobChanged:
            return  # the response stays incomplete: the server cuts the connection
        self.requests, self.bytes_sent = self.requests + 1, self.bytes_sent + sent
        self.log(f"{method} {raw[:200]} {status} {sent} {1000 * (time.perf_counter() - t0):.1f}ms")

    async def route(self, method: str, raw_path: str, scope: dict[str, Any], send: Any) -> tuple[int, int]:
        if method not in ("GET", "HEAD"):
            return await self.error(send, 405, "MethodNotAllowed", "this mirror is read-only", method)
        parts = _segments(raw_path)
        if parts is None:
            return await self.error(send, 400, "BadRequest", "malformed path", method)
        if parts[:1] == ["api"] and len(parts) >= 3 and parts[1] in AREAS:
            return await self.api(method, AREAS[parts[1]], parts[2:], send)
        kind = "model"
        if parts[:1] == ["datasets"]:
            kind, parts = "dataset", parts[1:]
        if "resolve" in parts[1:3]:
            return await self.resolve(method, kind, parts, scope, send)
        return await self.error(send, 404, "EntryNotFound", "no such endpoint", method)

    def lookup(self, kind: str, parts: list[str], marker: tuple[str, ...]) -> tuple[str, ServedRepo | None,
                                                                                   list[str]]:
        """The repo id a path starts with (ORG/NAME, or a single NAME such as gpt2), the repo if
        served, and the segments after the id. An id not served is read as ORG/NAME unless the
        segment after its first part is one of `marker` (what follows a repo id in that route)."""
        if len(parts) >= 2 and (kind, f"{parts[0]}/{parts[1]}") in self.index.repos:
            return f"{parts[0]}/{parts[1]}", self.index.repos[(kind, f"{parts[0]}/{parts[1]}")], parts[2:]
        if (kind, parts[0]) in self.index.repos or len(parts) < 2 or parts[1] in marker:
            return parts[0], self.index.repos.get((kind, parts[0])), parts[1:]
        return f"{parts[0]}/{parts[1]}", None, parts[2:]

    async def api(self, method: str, kind: str, parts: list[str], send: Any) -> tuple[int, int]:
        repo_id, repo, parts = self.lookup(kind, parts, ("revision", "tree"))
        if repo is None:
            return await self.error(send, 404, "RepoNotFound", f"Repository {repo_id} not found", method)
        what = parts[0] if parts else "revision"
        rev = parts[1] if len(parts) > 1 else "main"  # decoded once, in _segments
        commit = repo.commit_for(rev)
        if commit is None:
            return await self.error(send, 404, "RevisionNotFound", f"Invalid rev id: {rev}", method)
        if commit in repo.damaged:
            return await self.error(send, 503, "Damaged", f"{repo.repo_id}@{commit[:12]} is damaged: "
                                    f"{repo.damaged[commit]}", method)
        files = repo.revisions[commit]
        if what == "revision" and len(parts) <= 2:
            body = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": commit, "private": False,
                    "gated": False, "disabled": False,
                    "siblings": [{"rfilename": p, "size": f.size} for p, f in sorted(files.items())]}
        elif what == "tree":
            prefix = "/".join(parts[2:]).strip("/")
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
        repo_id, repo, parts = self.lookup(kind, parts, ("resolve",))
        if repo is None:
            return await self.error(send, 404, "RepoNotFound", f"Repository {repo_id} not found", method)
        if len(parts) < 3 or parts[0] != "resolve":
            return await self.error(send, 404, "EntryNotFound", "no such endpoint", method)
        commit = repo.commit_for(parts[1])
        if commit is None:
            return await self.error(send, 404, "RevisionNotFound", f"Invalid rev id: {parts[1]}", method)
        if commit in repo.damaged:
            return await self.error(send, 503, "Damaged", f"{repo.repo_id}@{commit[:12]} is damaged: "
                                    f"{repo.damaged[commit]}", method)
        served = repo.revisions[commit].get("/".join(parts[2:]))
        if served is None:
            return await self.error(send, 404, "EntryNotFound", f"{'/'.join(parts[2:])[:200]} does not exist",
                                    method)
        try:
            same = served.current() == served.identity
        except OSError:
            same = False
        if not same and not await asyncio.to_thread(_hashes_to_its_name, served):
            why = f"blob {served.blob[:16]}… changed since the mirror started (damaged); restore it"
            repo.damaged[commit] = why
            self.log(f"NOT serving {repo.repo_id}@{commit[:12]} any more: {why}")
            return await self.error(send, 503, "Damaged", f"{repo.repo_id}@{commit[:12]}: {why}", method)
        headers = {"etag": f'"{served.blob}"', "x-repo-commit": commit, "accept-ranges": "bytes",
                   "content-type": "application/octet-stream"}
        if served.lfs:
            headers.update({"x-linked-etag": f'"{served.blob}"', "x-linked-size": str(served.size)})
        wanted = _range(dict(scope["headers"]).get(b"range", b"").decode("latin-1"), served.size)
        if wanted is None:
            return await self.reply(send, 416, {"content-range": f"bytes */{served.size}"}, b"", method)
        start, end = wanted
        status = 206 if end - start < served.size else 200
        if status == 206:
            headers["content-range"] = f"bytes {start}-{end - 1}/{served.size}"
        headers["content-length"] = str(end - start)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        if method == "HEAD" or end == start:
            await send({"type": "http.response.body", "body": b""})
            return status, 0
        return status, await self.send_bytes(served, start, end, send, repo, commit)

    async def send_bytes(self, served: ServedFile, start: int, end: int, send: Any, repo: ServedRepo,
                         commit: str) -> int:
        """Bytes start..end of the blob, the last piece held back until every byte was read and the
        blob's identity is still the one hashed (else the connection is cut: `BlobChanged`)."""
        sent, held = 0, b""
        with open(served.file, "rb") as fh:
            fh.seek(start)
            while sent + len(held) < end - start:
                chunk = fh.read(min(CHUNK, end - start - sent - len(held)))
                if not chunk:
                    break
                if held:
                    await send({"type": "http.response.body", "body": held, "more_body": True})
                sent, held = sent + len(held), chunk
            try:
                same = served.current() == served.identity
            except OSError:
                same = False
        if not same or sent + len(held) != end - start:
            served.identity = ()  # the next request hashes it again, and 503s if it no longer matches
            self.log(f"{repo.repo_id}@{commit[:12]}: blob {served.blob[:16]}… changed while it was sent: "
                     "the response was cut")
            raise BlobChanged(served.blob)
        await send({"type": "http.response.body", "body": held, "more_body": False})
        return sent + len(held)

    async def error(self, send: Any, status: int, code: str, message: str, method: str) -> tuple[int, int]:
        body = json.dumps({"error": message}).encode()
        header = "".join(c if " " <= c <= "~" else "?" for c in message[:200])  # no CR, LF, NUL
        return await self.reply(send, status, {"content-type": "application/json", "x-error-code": code,
                                               "x-error-message": header}, body, method)

    @staticmethod
    async def reply(send: Any, status: int, headers: dict[str, str], body: bytes,
                    method: str) -> tuple[int, int]:
        headers = {**headers, "content-length": str(len(body))}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        return status, 0 if method == "HEAD" else len(body)


class BlobChanged(Exception):
    """A blob's bytes changed while it was being sent: the response is cut, never completed."""


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end) to send, end exclusive, per RFC 9110 §14: one ``bytes=`` range; the whole file
    without one, for another unit, several ranges or bad syntax (a server may ignore Range);
    None (416) when the range cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return 0, size
    first, dash, last = spec.strip().partition("-")
    if not dash or (first and not _digits(first)) or (last and not _digits(last)) or not (first or last):
        return 0, size
    if not first:  # a suffix: the last N bytes (N = 0 cannot be satisfied)
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else None
    start = int(first)
    if last and int(last) < start:
        return 0, size  # invalid: ignored
    if start >= size:
        return None
    return start, min(size, int(last) + 1) if last else size


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
