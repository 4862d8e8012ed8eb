"""A small stand-in for huggingface.co, so huggingface_hub's real download code runs in tests.

Speaks the part of the Hub protocol that `snapshot_download` / `hf_hub_download` use (see
the project's design notes): repo info, tree listing, HEAD/GET on ``resolve`` with the 307 (plain
files, same origin) and 302 (LFS, another origin) redirects and their headers, Range requests.
The tree may come a page at a time (``page_size``: ``Link: <…>; rel="next"``) and list folders
(``list_folders``), as the real Hub's does. With ``reject_credentials`` it answers 401
"Invalid credentials in Authorization header" to any request that carries an Authorization
header, which is the user's bug.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_MIN = 1024  # files at least this big, and every *.safetensors, are served as LFS


def git_blob_sha1(data: bytes) -> str:
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, bytes]
    commit: str = ""
    branches: dict[str, str] = field(default_factory=dict)
    repo_type: str = "model"
    _known: dict[str, tuple[bytes, str, str]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        """How the stand-in files it: ORG/NAME for models, datasets/ORG/NAME for datasets."""
        return self.repo_id if self.repo_type == "model" else f"datasets/{self.repo_id}"

    @property
    def token(self) -> str:
        """The key as one URL path segment."""
        return self.key.replace("/", "--")

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1(self.repo_id.encode())
            for p in sorted(self.files):
                h.update(p.encode() + bytes.fromhex(self._hashes(p)[1]))
            self.commit = h.hexdigest()
        self.branches.setdefault("main", self.commit)

    def is_lfs(self, path: str) -> bool:
        return len(self.files[path]) >= LFS_MIN or path.endswith(".safetensors")

    def oid(self, path: str) -> str:
        """The file's git blob sha1, as the Hub stores it (hashed once per content, not per request)."""
        return self._hashes(path)[0]

    def etag(self, path: str) -> str:
        return self._hashes(path)[1] if self.is_lfs(path) else self.oid(path)

    def _hashes(self, path: str) -> tuple[str, str]:
        data = self.files[path]
        known = self._known.get(path)
        if known is None or known[0] is not data:  # a test may swap a file's bytes
            known = (data, git_blob_sha1(data), hashlib.sha256(data).hexdigest())
            self._known[path] = known
        return known[1], known[2]


class HubStandIn:
    """Start with `start()`, stop with `stop()`; `endpoint` is what HF_ENDPOINT should be."""

    def __init__(self, repos: list[HubRepo], reject_credentials: bool = True) -> None:
        self.repos = {r.key: r for r in repos}
        self.reject_credentials = reject_credentials
        self.accepted_tokens: set[str] = set()  # tokens that are valid (any other is stale)
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.cut_after: int | None = None  # cut LFS bodies after this many bytes, once
        self.rate: float | None = None  # bytes per second for file bodies (a slow link)
        self.bytes_sent = 0  # file body bytes sent so far
        self.sending: set[object] = set()  # the requests whose throttled body is being sent now
        self.page_size: int | None = None  # tree entries per page (None: one page)
        self.list_folders = False  # the tree lists folders too (type "directory"), as the Hub's does
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # stop() waits for the loop to see it: every 0.05 s, not the default 0.5 (a fixture per test)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> HubStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, repo: HubRepo) -> None:
        self.repos[repo.key] = repo

    def authorized(self, since: int = 0) -> list[tuple[str, str, str | None]]:
        """The requests from the `since`-th on that carried an Authorization header."""
        return [r for r in self.requests[since:] if r[2] is not None]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _send(self, code: int, headers: dict[str, str], body: bytes = b"",
                      head: bool = False) -> None:
                self.send_response(code)
                headers.setdefault("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _error(self, code: int, err: str, msg: str, head: bool) -> None:
                body = json.dumps({"error": msg}).encode()
                self._send(code, {"X-Error-Code": err, "X-Error-Message": msg,
                                  "Content-Type": "application/json"}, body, head)

            def _serve(self, head: bool) -> None:
                url = urlsplit(self.path)
                path = unquote(url.path)
                auth = self.headers.get("Authorization")
                hub.requests.append((self.command, self.path, auth))
                valid = auth and auth.removeprefix("Bearer ") in hub.accepted_tokens
                if auth and hub.reject_credentials and not valid:
                    msg = "Invalid credentials in Authorization header"
                    body = json.dumps({"error": msg}).encode()
                    self._send(401, {"X-Error-Message": msg, "Content-Type": "application/json"},
                               body, head)
                    return
                parts = path.strip("/").split("/")
                kind = "datasets/" if parts[:2] == ["api", "datasets"] or parts[:1] == ["datasets"] else ""
                if kind and parts[0] == "datasets":
                    parts = parts[1:]
                if kind and parts[:2] == ["api", "datasets"]:
                    parts = ["api", "models", *parts[2:]]
                if parts[:2] == ["api", "models"] and len(parts) >= 3 and kind + parts[2] in hub.repos \
                        and (len(parts) < 4 or kind + "/".join(parts[2:4]) not in hub.repos):  # gpt2
                    parts = ["api", "models", "", *parts[2:]]  # as if its org were empty
                elif len(parts) >= 2 and parts[1] == "resolve":
                    parts = ["", *parts]
                if parts[:2] == ["api", "models"] and len(parts) == 4:
                    self._api([*parts, "revision", "main"], head, kind)
                elif parts[:2] == ["api", "models"] and len(parts) >= 5:
                    self._api(parts, head, kind)
                elif parts[:2] == ["api", "blob"] and len(parts) >= 5:
                    self._content(parts[2], parts[3], "/".join(parts[4:]), head)
                elif parts[:1] == ["lfs"] and len(parts) == 3:
                    self._lfs(parts[1], parts[2], head)
                elif len(parts) >= 5 and parts[2] == "resolve":
                    repo_id = kind + "/".join(filter(None, parts[:2]))
                    self._resolve(repo_id, parts[3], "/".join(parts[4:]), head)
                else:
                    self._error(404, "EntryNotFound", f"no route {path}", head)

            def _repo(self, repo_id: str, head: bool) -> HubRepo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head)
                return repo

            def _commit(self, repo: HubRepo, rev: str, head: bool) -> str | None:
                commit = repo.branches.get(rev, rev if rev == repo.commit else None)
                if commit is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                return commit

            def _api(self, parts: list[str], head: bool, kind: str = "") -> None:
                repo = self._repo(kind + "/".join(filter(None, parts[2:4])), head)
                if repo is None:
                    return
                kind, rev = parts[4], unquote("/".join(parts[5:]))
                commit = self._commit(repo, rev or "main", head)
                if commit is None:
                    return
                if kind == "revision":
                    body = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": commit,
                            "private": False, "gated": False,
                            "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
                elif kind == "tree":
                    self._tree(repo, head)
                    return
                else:
                    self._error(404, "EntryNotFound", f"no api {kind}", head)
                    return
                self._send(200, {"Content-Type": "application/json"}, json.dumps(body).encode(), head)

            def _tree(self, repo: HubRepo, head: bool) -> None:
                body = []
                parents = {"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)}
                for d in sorted(parents) if hub.list_folders else []:
                    body.append({"type": "directory", "path": d, "size": 0, "oid": "0" * 40})
                for p in sorted(repo.files):
                    entry = {"type": "file", "path": p, "size": len(repo.files[p]), "oid": repo.oid(p)}
                    if repo.is_lfs(p):
                        entry["lfs"] = {"oid": repo.etag(p), "size": len(repo.files[p]), "pointerSize": 134}
                    body.append(entry)
                headers = {"Content-Type": "application/json"}
                if hub.page_size:
                    url = urlsplit(self.path)
                    start = int(parse_qs(url.query).get("cursor", ["0"])[0])
                    end = start + hub.page_size
                    if end < len(body):
                        nxt = f"{hub.endpoint}{url.path}?recursive=true&cursor={end}"
                        headers["Link"] = f'<{nxt}>; rel="next"'
                    body = body[start:end]
                self._send(200, headers, json.dumps(body).encode(), head)

            def _resolve(self, repo_id: str, rev: str, fpath: str, head: bool) -> None:
                repo = self._repo(repo_id, head)
                if repo is None:
                    return
                commit = self._commit(repo, unquote(rev), head)
                if commit is None:
                    return
                if fpath not in repo.files:
                    self._error(404, "EntryNotFound", f"{fpath} does not exist", head)
                    return
                data = repo.files[fpath]
                common = {"X-Repo-Commit": commit}
                if repo.is_lfs(fpath):
                    etag = repo.etag(fpath)
                    self._send(302, {**common, "X-Linked-Etag": f'"{etag}"',
                                     "X-Linked-Size": str(len(data)), "ETag": f'"{etag}"',
                                     "Location": f"http://localhost:{hub.port}/lfs/{repo.token}/{etag}"},
                               b"", head)
                else:
                    self._send(307, {**common, "Location": f"/api/blob/{repo.token}/{commit}/{fpath}"},
                               b"", head)

            def _content(self, token: str, commit: str, fpath: str, head: bool) -> None:
                repo = next((r for r in hub.repos.values() if r.token == token), None)
                if repo is None or fpath not in repo.files:
                    self._error(404, "EntryNotFound", "gone", head)
                    return
                data = repo.files[fpath]
                self._body(data, {"ETag": f'"{repo.oid(fpath)}"', "X-Repo-Commit": commit}, head)

            def _lfs(self, token: str, sha: str, head: bool) -> None:
                repo = next((r for r in hub.repos.values() if r.token == token), None)
                match = [p for p in (repo.files if repo else {}) if repo and repo.etag(p) == sha]
                if not match:
                    self._error(404, "EntryNotFound", "no such object", head)
                    return
                self._body(repo.files[match[0]], {"ETag": f'"{sha}"'}, head)

            def _body(self, data: bytes, headers: dict[str, str], head: bool) -> None:
                rng = self.headers.get("Range")
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                code = 206 if rng else 200
                if hub.cut_after is not None and not head and len(body) > hub.cut_after:
                    cut, hub.cut_after = hub.cut_after, None
                    self.send_response(code)
                    for k, v in {**headers, "Content-Length": str(len(body))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if hub.rate and not head:
                    self._throttled(code, {**headers, "Content-Type": "application/octet-stream"}, body)
                    return
                if not head:
                    hub.bytes_sent += len(body)
                self._send(code, {**headers, "Content-Type": "application/octet-stream"}, body, head)

            def _throttled(self, code: int, headers: dict[str, str], body: bytes) -> None:
                """A slow link: the body in 64 KiB pieces at `hub.rate` bytes per second."""
                self.send_response(code)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                step = 65536
                hub.sending.add(self)
                try:
                    for i in range(0, len(body), step):
                        try:
                            self.wfile.write(body[i:i + step])
                        except OSError:  # the client went away
                            self.close_connection = True
                            return
                        hub.bytes_sent += len(body[i:i + step])
                        time.sleep(step / hub.rate)
                finally:
                    hub.sending.discard(self)

        return Handler
