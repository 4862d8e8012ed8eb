"""The Hub's own listing of a revision, asked from this machine without any credential.

``GET {endpoint}/api/{models|datasets}/{repo}/revision/{rev}`` names the commit (``sha``);
``GET .../tree/{commit}?recursive=true`` lists its files (path, size, git blob id ``oid``, and
``lfs.oid``, the sha256, for LFS files), a page at a time (``Link: <…>; rel="next"``), as the
Hub answers huggingface_hub. The standard library's urllib asks: it reads no token file, no
``HF_TOKEN`` and no ``~/.netrc``; a token is sent only when the caller passes one (a gated repo).

The endpoint is untrusted input like anything else that arrives: every answer is bounded in
bytes, the listing in entries and pages, the whole in time; its JSON is checked field by field;
redirects are followed only within the endpoint's origin. Whatever keeps the listing from being
had (offline, unreachable, refused, malformed) is `Unavailable`, with the reason in words.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from http.client import HTTPException
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_RESPONSE_BYTES = 32 << 20  # one answer (the Hub's tree pages are ~1000 entries, well under 1 MiB)
MAX_ENTRIES = 250_000  # files and folders of one revision
MAX_PAGES = 1_000
DEADLINE_S = 60.0  # the whole listing, every page
READ_TIMEOUT_S = 15.0  # one silent stretch of one request
SHA1_RE = re.compile(r"^[0-9a-f]{40}\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
NEXT_RE = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')
OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")


class Unavailable(Exception):
    """The listing could not be had; the message says why, in words a summary can carry."""


class RevisionUnknown(Exception):
    """The endpoint answered that the repo has no such revision (RevisionNotFound)."""


@dataclass(frozen=True)
class ListedFile:
    """One file as the Hub lists it."""

    size: int
    oid: str  # git blob id (for an LFS file: its pointer's)
    lfs: str | None = None  # sha256 of the content, for an LFS file

    @property
    def blob(self) -> str:
        """The blob name huggingface_hub gives it: the LFS sha256, else the git blob id."""
        return self.lfs or self.oid


@dataclass(frozen=True)
class HubListing:
    """A revision's files as the endpoint lists them: path -> `ListedFile`."""

    endpoint: str
    repo_type: str
    repo_id: str
    revision: str
    commit: str
    files: Mapping[str, ListedFile]

    def filtered(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> HubListing:
        """The files a download with these patterns fetches (huggingface_hub's filter_repo_objects)."""
        keep = {p: f for p, f in self.files.items() if selected(p, tuple(include), tuple(exclude))}
        return HubListing(self.endpoint, self.repo_type, self.repo_id, self.revision, self.commit,
                          MappingProxyType(keep))


def selected(path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether `path` passes allow/ignore patterns exactly as huggingface_hub filters a download:
    fnmatch, case-sensitive; a pattern ending in ``/`` means everything below; ``\\`` is ``/``."""
    def norm(p: str) -> str:
        p = p.replace("\\", "/")
        return p + "*" if p.endswith("/") else p

    path = path.replace("\\", "/")
    if include and not any(fnmatchcase(path, norm(p)) for p in include):
        return False
    return not (exclude and any(fnmatchcase(path, norm(p)) for p in exclude))


def endpoint_of(given: str | None) -> str:
    """The endpoint a download uses: the one given, else ``HF_ENDPOINT``, else huggingface.co."""
    return (given or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in OFFLINE_VALUES


def ask_listing(endpoint: str, repo_id: str, revision: str, repo_type: str = "model",
                token: str | None = None, deadline_s: float = DEADLINE_S) -> HubListing:
    """The endpoint's listing of `repo_id` at `revision`; `Unavailable` or `RevisionUnknown` if not had."""
    if offline():
        raise Unavailable("HF_HUB_OFFLINE is set")
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise Unavailable(f"the endpoint {endpoint[:200]!r} is not an http(s) URL")
    client = _Client(endpoint, token, time.monotonic() + deadline_s)
    api = f"{endpoint}/api/{'datasets' if repo_type == 'dataset' else 'models'}/{repo_id}"
    info = client.get_json(f"{api}/revision/{quote(revision, safe='')}")[0]
    commit = info.get("sha") if isinstance(info, dict) else None
    if not (isinstance(commit, str) and SHA1_RE.match(commit)):
        raise Unavailable(f"the endpoint's answer for {repo_id}@{revision} names no commit")
    files: dict[str, ListedFile] = {}
    seen = 0
    page: str | None = f"{api}/tree/{commit}?recursive=true"
    for _ in range(MAX_PAGES):
        if page is None:
            break
        entries, page = client.get_json(page)
        if not isinstance(entries, list):
            raise Unavailable("the endpoint's tree is not a list")
        seen += len(entries)
        if seen > MAX_ENTRIES:
            raise Unavailable(f"the endpoint lists more than {MAX_ENTRIES} entries")
        for e in entries:
            _add(files, e)
    else:
        if page is not None:
            raise Unavailable(f"the endpoint's tree runs past {MAX_PAGES} pages")
    return HubListing(endpoint, repo_type, repo_id, revision, commit, MappingProxyType(files))


def _add(files: dict[str, ListedFile], e: Any) -> None:
    """One tree entry, checked field by field; folders are skipped."""
    if not isinstance(e, dict) or e.get("type") not in ("file", "directory"):
        raise Unavailable("the endpoint's tree holds an entry that is neither file nor folder")
    if e["type"] == "directory":
        return
    path, size, oid, lfs = e.get("path"), e.get("size"), e.get("oid"), e.get("lfs")
    if not (isinstance(path, str) and path and type(size) is int and size >= 0
            and isinstance(oid, str) and SHA1_RE.match(oid)):
        raise Unavailable(f"the endpoint's tree entry {str(path)[:100]!r} lacks a path, size or git id")
    sha = None
    if lfs is not None:
        sha = lfs.get("oid") if isinstance(lfs, dict) else None
        if not (isinstance(sha, str) and SHA256_RE.match(sha) and lfs.get("size", size) == size):
            raise Unavailable(f"the endpoint's tree entry {path[:100]!r} has an LFS part that is not "
                              "a sha256 of its size")
    if path in files:
        raise Unavailable(f"the endpoint's tree lists {path[:100]!r} twice")
    files[path] = ListedFile(size, oid, sha)


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the endpoint's origin (a renamed repo), never elsewhere."""

    def __init__(self, origin: tuple[str, str]) -> None:
        self.origin = origin

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        if _origin(newurl) != self.origin:
            raise Unavailable(f"the endpoint redirected the listing to another host ({_origin(newurl)[1]})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _origin(url: str) -> tuple[str, str]:
    u = urlsplit(url)
    return u.scheme, u.netloc.lower()


class _Client:
    """GETs JSON from one origin, within one deadline, sending only what is given here."""

    def __init__(self, endpoint: str, token: str | None, deadline: float) -> None:
        self.origin, self.token, self.deadline = _origin(endpoint), token, deadline
        # no HTTPBasicAuthHandler, no cookie jar: nothing is sent that was not put here
        self.opener = urllib.request.OpenerDirector()
        for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
                        urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                        _SameOrigin(self.origin)):
            self.opener.add_handler(handler)

    def get_json(self, url: str) -> tuple[Any, str | None]:
        """The answer's JSON and its next page's URL, if any."""
        if _origin(url) != self.origin:
            raise Unavailable("the endpoint's next page is on another host")
        headers = {"Accept": "application/json", "User-Agent": "edgetam-provision"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            with self.opener.open(urllib.request.Request(url, headers=headers),
                                  timeout=self._left()) as resp:
                body = self._read(resp)
                link = resp.headers.get("Link") or ""
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (urllib.error.URLError, OSError, HTTPException, ValueError) as exc:
            raise Unavailable(f"the endpoint is unreachable from here ({_why(exc)})") from None
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Unavailable("the endpoint's answer is not JSON") from None
        nxt = NEXT_RE.search(link)
        return data, urljoin(url, nxt.group(1)) if nxt else None

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Unavailable("the endpoint did not give the whole listing in time")
        return min(left, READ_TIMEOUT_S)

    def _read(self, resp: Any) -> bytes:
        chunks, size = [], 0
        read = getattr(resp, "read1", resp.read)  # read1: one recv, so a drip meets the deadline
        while chunk := read(65536):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise Unavailable(f"an answer of the endpoint is larger than {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)
            self._left()
        return b"".join(chunks)

    def _refused(self, exc: urllib.error.HTTPError) -> Exception:
        code = exc.code
        kind = exc.headers.get("X-Error-Code", "") if exc.headers else ""
        exc.close()
        if code == 404 and kind == "RevisionNotFound":
            return RevisionUnknown()
        if code in (401, 403) and self.token:
            return Unavailable(f"the endpoint refused the token given (HTTP {code})")
        if code in (401, 403):
            return Unavailable(f"the endpoint does not list it without a token (HTTP {code}: gated, private)")
        if code == 404 and self.token:
            return Unavailable("the endpoint has no such repo (HTTP 404)")
        if code == 404:
            return Unavailable("the endpoint does not list the repo without a token (HTTP 404: private, "
                               "or not there)")
        return Unavailable(f"the endpoint answered HTTP {code}")


def _why(exc: BaseException) -> str:
    """A connection failure in a few words: refused, name not found, timed out, TLS."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {getattr(reason, 'reason', None) or reason}"[:120]
    return (getattr(reason, "strerror", None) or str(reason) or type(reason).__name__)[:120]
