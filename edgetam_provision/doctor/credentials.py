"""Every credential a download from this machine would send, where it is, and a probe to test one.

Looked up in huggingface_hub's own places and order; shown masked (``hf_…abcd``), never in full.
"""

from __future__ import annotations

import configparser
import netrc
import os
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # in the order huggingface_hub reads them


def mask(token: str) -> str:
    """``hf_…abcd``: enough to recognise a token, never enough to use it."""
    return f"{token[:3]}…{token[-4:]}" if len(token) > 8 else "…"


def hf_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(os.path.expandvars(os.path.expanduser(os.environ.get("HF_HOME") or str(default))))


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def truthy(var: str) -> bool:
    return os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def token_sources() -> list[tuple[str, str]]:
    """Every place a token is set, in huggingface_hub's order: [(source, token)], the first is sent."""
    found = [(f"${var}", os.environ[var].strip()) for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
             if os.environ.get(var, "").strip()]
    path = Path(os.environ.get("HF_TOKEN_PATH") or hf_home() / "token").expanduser()
    try:
        value = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        value = ""
    return found + ([(f"token file {path}", value)] if value else [])


def find_token() -> tuple[str | None, str | None]:
    """(token, where it comes from) that huggingface_hub sends; (None, None) when none is sent."""
    sources = token_sources()
    if truthy("HF_HUB_DISABLE_IMPLICIT_TOKEN") or not sources:
        return None, None
    source, token = sources[0]
    return token, source


def hub_token() -> str | None:
    """The token huggingface_hub itself would send (its own lookup), for the cross-check."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    try:
        return None if truthy("HF_HUB_DISABLE_IMPLICIT_TOKEN") else get_token()
    except Exception:  # a broken token file: our own lookup still reports it
        return None


@dataclass(frozen=True)
class Source:
    """One credential a download would send: where it is, and the Authorization it makes."""

    kind: str  # env | token-file | stored-token | netrc
    where: str  # a variable name or a file
    label: str  # what the report says (masked)
    auth: str  # the Authorization header value (never printed)
    name: str = ""  # a stored token's name, a netrc host


def sources() -> list[Source]:
    """Every credential found, in huggingface_hub's places (not only the one sent first)."""
    env = {var: os.environ.get(var, "").strip() for var in TOKEN_VARS}
    found = [Source("env", var, f"${var} ({mask(v)})", f"Bearer {v}") for var, v in env.items() if v]
    token_file = Path(os.environ.get("HF_TOKEN_PATH") or hf_home() / "token").expanduser()
    value = read_text(token_file).strip()
    if value:
        found.append(Source("token-file", str(token_file), f"token file {token_file} ({mask(value)})",
                            f"Bearer {value}"))
    stored = stored_path()
    for name, token in stored_tokens(stored).items():
        found.append(Source("stored-token", str(stored), f"stored token {name!r} in {stored} ({mask(token)})",
                            f"Bearer {token}", name))
    rc = netrc_path()
    host = urlsplit(endpoint()).hostname or ""
    entry = netrc_login(rc, host)
    if entry:
        login, password, name = entry
        found.append(Source("netrc", str(rc), f"{rc} entry for {name} (login {login})",
                            "Basic " + b64encode(f"{login}:{password}".encode()).decode(), name))
    return found


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="surrogateescape")
    except OSError:
        return ""


def stored_path() -> Path:
    return Path(os.environ.get("HF_STORED_TOKENS_PATH") or hf_home() / "stored_tokens").expanduser()


def stored_tokens(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser()
    try:
        parser.read_string(read_text(path))
    except configparser.Error:
        return {}
    return {name: parser[name].get("hf_token", "").strip() for name in parser.sections()
            if parser[name].get("hf_token", "").strip()}


def netrc_path() -> Path:
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()


def netrc_login(path: Path, host: str) -> tuple[str, str, str] | None:
    """(login, password, the entry: the host or 'default') that a netrc client sends to `host`."""
    if not host or not path.is_file() or str(path) == "/dev/null":
        return None
    try:
        hosts = netrc.netrc(str(path)).hosts
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError):  # unreadable: a finding of its own
        return None
    entry, name = (hosts[host], host) if host in hosts else (hosts.get("default"), "default")
    return (entry[0] or "", entry[2] or "", name) if entry else None


def netrc_unreadable(path: Path) -> str:
    """Why Python's netrc cannot read `path` as text ("" when it can, or there is none)."""
    try:
        path.read_bytes().decode("utf-8")
    except OSError:
        return ""
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    return ""


def probe(url: str, auth: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0
