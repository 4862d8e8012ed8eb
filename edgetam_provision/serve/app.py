"""The verified cache as a read-only Hugging Face endpoint: the HTTP answers.

The app answers only from the index (`index`): a URL is split into segments, each decoded once,
and looked up in dictionaries; no path is ever built from a request, so nothing outside the index
can be read, whatever the URL says. The query string (``?revision=``, ``?recursive=``) is read
from the request's own field, never from the path.

A blob that changes after it was hashed is never served as the genuine one. Each blob's identity
(device, inode, size, mtime and ctime, in ns) is kept with its hash; before a response, a blob
whose identity changed is hashed again (in a thread), and a mismatch makes the revision answer 503
until the disk under it changes again and it checks out whole (a repair is seen without a restart).
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

import ipaddress
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..fsutil import open_regular
from ..integrity import hashing
from .index import MirrorIndex, ServedFile, ServedRepo, ServedRevision
from .request import byte_range, flag, query, segments

CHUNK = 1024 * 1024
AREAS = {"models": "model", "datasets": "dataset"}


@dataclass(frozen=True)
class Refusal:
    """An error answer: HTTP status, the Hub's ``X-Error-Code``, and the message."""

    status: int
    code: str
    message: str


Found = tuple[ServedRepo, ServedRevision, list[str]]  # a request's repo, revision, and the segments after


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
        qs = scope.get("query_string", b"").decode("latin-1")
        self.log(f"{method} {(raw + ('?' + qs if qs else ''))[:200]} {status} {sent} "
                 f"{1000 * (time.perf_counter() - t0):.1f}ms")

    async def route(self, method: str, raw_path: str, scope: dict[str, Any], send: Any) -> tuple[int, int]:
        if method not in ("GET", "HEAD"):
            return await self.error(send, Refusal(405, "MethodNotAllowed", "this mirror is read-only"),
                                    method)
        parts, fields = segments(raw_path), query(scope.get("query_string", b""))
        if parts is None or fields is None:
            return await self.error(send, Refusal(400, "BadRequest", "malformed path or query"), method)
        if parts[:1] == ["api"] and len(parts) >= 3 and parts[1] in AREAS:
            answer = await self.api(AREAS[parts[1]], parts[2:], fields)
            if isinstance(answer, Refusal):
                return await self.error(send, answer, method)
            return await self.reply(send, 200, {"content-type": "application/json"},
                                    json.dumps(answer).encode(), method)
        kind = "model"
        if parts[:1] == ["datasets"]:
            kind, parts = "dataset", parts[1:]
        if "resolve" in parts[1:3]:
            return await self.resolve(method, kind, parts, scope, send)
        return await self.error(send, Refusal(404, "EntryNotFound", "no such endpoint"), method)

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

    async def revision(self, kind: str, parts: list[str], marker: tuple[str, ...],
                       rev: Callable[[list[str]], str]) -> Found | Refusal:
        """The served revision a request names (its repo, the revision, the segments after the id),
        or why not: the repo or revision unknown (404), or damaged (503, until it is repaired)."""
        repo_id, repo, rest = self.lookup(kind, parts, marker)
        if repo is None:
            return Refusal(404, "RepoNotFound", f"Repository {repo_id} not found")
        name = rev(rest)
        commit = repo.commit_for(name)
        if commit is None:
            return Refusal(404, "RevisionNotFound", f"Invalid rev id: {name}")
        served = await self.index.current(repo, commit)
        if served.damaged:
            return Refusal(503, "Damaged", f"{repo.repo_id}@{commit[:12]} is damaged: {served.damaged}")
        return repo, served, rest

    async def api(self, kind: str, parts: list[str], fields: dict[str, str]) -> Any:
        """Repo info (``/api/models/ID``, ``…/revision/REV``, or ``?revision=REV``) and the file tree
        (``…/tree/REV[/PATH]``, ``?recursive=``), at the revision asked; main when none is."""
        asked = fields.get("revision") or "main"
        found = await self.revision(kind, parts, ("revision", "tree"),
                                    lambda rest: rest[1] if len(rest) > 1 else asked)
        if isinstance(found, Refusal):
            return found
        repo, served, rest = found
        what = rest[0] if rest else "revision"
        if what == "revision" and len(rest) <= 2:
            return {"id": repo.repo_id, "modelId": repo.repo_id, "sha": served.commit, "private": False,
                    "gated": False, "disabled": False,
                    "siblings": [{"rfilename": p, "size": f.size, "blobId": f.oid(), **lfs_info(f, "sha256")}
                                 for p, f in sorted(served.files.items())]}
        if what == "tree":
            prefix = "/".join(rest[2:]).strip("/")
            listing = tree(served.files, prefix, flag(fields.get("recursive")))
            return listing if listing or not prefix else Refusal(404, "EntryNotFound",
                                                                 f"{prefix[:200]} does not exist")
        return Refusal(404, "EntryNotFound", "no such endpoint")

    async def resolve(self, method: str, kind: str, parts: list[str], scope: dict[str, Any],
                      send: Any) -> tuple[int, int]:
        found = await self.revision(kind, parts, ("resolve",), lambda rest: rest[1] if len(rest) > 1 else "")
        if not isinstance(found, Refusal) and (len(found[2]) < 3 or found[2][0] != "resolve"):
            found = Refusal(404, "EntryNotFound", "no such endpoint")
        if isinstance(found, Refusal):
            return await self.error(send, found, method)
        repo, revision, rest = found
        served = revision.files.get("/".join(rest[2:]))
        if served is None:
            missing = f"{'/'.join(rest[2:])[:200]} does not exist"
            return await self.error(send, Refusal(404, "EntryNotFound", missing), method)
        if not await self.index.still_genuine(repo, revision.commit, served):
            why = repo.revisions[revision.commit].damaged or "changed on disk"
            return await self.error(send, Refusal(503, "Damaged", f"{repo.repo_id}@{revision.commit[:12]}: "
                                                  f"{why}"), method)
        headers = {"etag": f'"{served.blob}"', "x-repo-commit": revision.commit, "accept-ranges": "bytes",
                   "content-type": "application/octet-stream"}
        if served.lfs:
            headers.update({"x-linked-etag": f'"{served.blob}"', "x-linked-size": str(served.size)})
        wanted = byte_range(dict(scope["headers"]).get(b"range", b"").decode("latin-1"), served.size)
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
        what = f"{repo.repo_id}@{revision.commit[:12]}"
        return status, await self.send_bytes(served, start, end, send, what)

    async def send_bytes(self, served: ServedFile, start: int, end: int, send: Any, what: str) -> int:
        """Bytes start..end of the blob, the last piece held back until every byte was read and the
        blob's identity is still the one hashed (else the connection is cut: `BlobChanged`)."""
        sent, held = 0, b""
        try:
            fh = open_regular(served.file)
        except OSError:
            fh = None
        if fh is not None:
            with fh:
                fh.seek(start)
                while sent + len(held) < end - start:
                    chunk = fh.read(min(CHUNK, end - start - sent - len(held)))
                    if not chunk:
                        break
                    if held:
                        await send({"type": "http.response.body", "body": held, "more_body": True})
                    sent, held = sent + len(held), chunk
        if fh is None or served.current() != served.identity or sent + len(held) != end - start:
            served.identity = None  # the next request hashes it again, and 503s if it no longer matches
            self.log(f"{what}: blob {served.blob[:16]}… changed while it was sent: the response was cut")
            raise BlobChanged(served.blob)
        await send({"type": "http.response.body", "body": held, "more_body": False})
        return sent + len(held)

    async def error(self, send: Any, refusal: Refusal, method: str) -> tuple[int, int]:
        body = json.dumps({"error": refusal.message}).encode()
        header = "".join(c if " " <= c <= "~" else "?" for c in refusal.message[:200])  # no CR, LF, NUL
        return await self.reply(send, refusal.status, {"content-type": "application/json",
                                                       "x-error-code": refusal.code,
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


def lfs_info(f: ServedFile, oid_key: str) -> dict[str, Any]:
    """The ``lfs`` field the Hub gives an LFS file (its sha256 under `oid_key`: ``oid`` in a tree,
    ``sha256`` in repo info), with the size of its pointer file; nothing for another file."""
    if not f.lfs:
        return {}
    return {"lfs": {oid_key: f.blob, "size": f.size, "pointerSize": len(f.pointer())}}


def tree(files: dict[str, ServedFile], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """The Hub's tree listing under `prefix`: every file below it (recursive), or its files and
    folders one level down. A folder's oid is its git tree id, computed as git would with every
    file in mode 100644 (the executable bit is not in the cache)."""
    below = {p: f for p, f in files.items() if not prefix or p.startswith(prefix + "/")}
    if recursive:
        return [{"type": "file", "path": p, "size": f.size, "oid": f.oid(), **lfs_info(f, "oid")}
                for p, f in sorted(below.items())]
    cut = len(prefix) + 1 if prefix else 0
    out: list[dict[str, Any]] = []
    folders: set[str] = set()
    for p, f in sorted(below.items()):
        name = p[cut:].split("/", 1)[0]
        if "/" not in p[cut:]:
            out.append({"type": "file", "path": p, "size": f.size, "oid": f.oid(), **lfs_info(f, "oid")})
        elif name not in folders:
            folders.add(name)
            path = p[:cut] + name
            out.append({"type": "directory", "path": path, "oid": git_tree_id(files, path)})
    return out


def git_tree_id(files: dict[str, ServedFile], folder: str) -> str:
    """The git tree id of `folder`: entries sorted as git sorts them (a folder as ``name/``)."""
    entries: dict[str, tuple[bytes, str]] = {}
    for p, f in files.items():
        if p.startswith(folder + "/"):
            name, _, rest = p[len(folder) + 1:].partition("/")
            if not rest:
                entries[name] = (b"100644", f.oid())
            elif name + "/" not in entries:
                entries[name + "/"] = (b"40000", git_tree_id(files, f"{folder}/{name}"))
    body = b"".join(mode + b" " + name.rstrip("/").encode() + b"\0" + bytes.fromhex(oid)
                    for name, (mode, oid) in sorted(entries.items(), key=lambda e: e[0].encode()))
    return hashing.git_tree_id(body)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str) -> str | None:
    """A warning for any address but loopback (None when it binds loopback only)."""
    if is_loopback(host):
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
