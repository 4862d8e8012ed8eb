"""`provision doctor`: say exactly why model downloads fail on this machine, and what to do.

Every check returns ok / warn / fail with a fix. Credentials are looked up in huggingface_hub's
own order and shown masked (``hf_…abcd``), never in full. ``--online`` probes the endpoint
anonymously and with each credential found, and names the cause of a 401 from the difference.
"""

from __future__ import annotations

import configparser
import netrc
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..console import counted
from ..errors import ModelMissingError
from ..hub.cache import BACKBONE_REPO, EDGETAM_REPO, check_revision, resolve_commit
from ..parallel import in_background
from ..verify.runtime import (
    REQUIRED,
    available_devices,
    hub_reads_netrc,
    library_verdict,
    library_versions,
    needs_backbone_config,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # in the order huggingface_hub reads them
NEEDED_BYTES = 60_000_000  # EdgeTAM (37 MB of weights) + backbone config, with headroom


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def mask(token: str) -> str:
    """``hf_…abcd``: enough to recognise a token, never enough to use it."""
    return f"{token[:3]}…{token[-4:]}" if len(token) > 8 else "…"


def hf_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(os.path.expandvars(os.path.expanduser(os.environ.get("HF_HOME") or str(default))))


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _truthy(var: str) -> bool:
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
    if _truthy("HF_HUB_DISABLE_IMPLICIT_TOKEN") or not sources:
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
        return None if _truthy("HF_HUB_DISABLE_IMPLICIT_TOKEN") else get_token()
    except Exception:  # a broken token file: our own lookup still reports it
        return None


def credential_checks() -> list[Check]:
    """Every credential source, the one sent first and the shadowed ones after it, masked."""
    sources = token_sources()
    token, source = find_token()
    checks: list[Check] = []
    if _truthy("HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        checks.append(Check("credentials", "ok", "HF_HUB_DISABLE_IMPLICIT_TOKEN=1: no token is sent"))
    elif token:
        checks.append(Check("credentials", "warn",
                            f"{mask(token)} from {source} is sent with every request; if it is stale, "
                            "even public models fail with 401",
                            "run `provision doctor --online` to test it; unset it, or run with "
                            "HF_HUB_DISABLE_IMPLICIT_TOKEN=1, or use `provision fetch --local`"))
    else:
        checks.append(Check("credentials", "ok", "no token is sent (anonymous downloads)"))
    shadowed = sources[1:] if token else sources
    for i, (where, value) in enumerate(shadowed):
        after = sources[i][0] if token else "HF_HUB_DISABLE_IMPLICIT_TOKEN"
        checks.append(Check("credentials (shadowed)", "warn",
                            f"{mask(value)} from {where} would be sent next if {after} is unset",
                            "remove it too if it is stale, or the next run fails the same way"))
    theirs = hub_token()
    if theirs != token:
        checks.append(Check("credentials (cross-check)", "warn",
                            f"huggingface_hub's own lookup sends {mask(theirs) if theirs else 'no token'}, "
                            f"not {mask(token) if token else 'no token'}: it reads a source this check "
                            "does not know (e.g. $HF_STORED_TOKENS_PATH)", "trust huggingface_hub's answer"))
    if "HF_TOKEN" in os.environ and not os.environ["HF_TOKEN"].strip() and source and "file" in source:
        checks.append(Check("empty HF_TOKEN", "warn", "HF_TOKEN is set but empty: that does NOT disable "
                            f"the {source}", "set HF_HUB_DISABLE_IMPLICIT_TOKEN=1 instead"))
    stored = Path(os.environ.get("HF_STORED_TOKENS_PATH") or hf_home() / "stored_tokens").expanduser()
    if stored.is_file():
        names = [ln.strip("[] \n") for ln in stored.read_text(errors="replace").splitlines()
                 if ln.startswith("[")]
        checks.append(Check("stored tokens", "ok", f"named tokens in {stored}: {', '.join(names) or 'none'}"
                            " (only the active one is sent)"))
    return checks


def netrc_entry() -> tuple[Path, str, tuple[str, str]] | None:
    """(netrc file, matched host or 'default', (login, password)) for the endpoint's host."""
    path = _netrc_path()
    entry = _netrc_login(path, urlsplit(endpoint()).hostname or "")
    return (path, entry[2], (entry[0], entry[1])) if entry else None


def netrc_checks(hub_version: str) -> list[Check]:
    entry = netrc_entry()
    if entry is None:
        return [Check("netrc", "ok", "no ~/.netrc entry for the endpoint's host")]
    path, host, _cred = entry
    if hub_reads_netrc(hub_version):
        return [Check("netrc", "fail", f"{path} has an entry for {host}; huggingface_hub {hub_version} "
                      "(requests) sends it as Basic auth, replacing any token",
                      "remove that entry, or run with NETRC=/dev/null (provision fetch does)")]
    return [Check("netrc", "warn", f"{path} has an entry for {host}; huggingface_hub {hub_version} "
                  "ignores it, but requests-based clients (huggingface_hub < 1.0, e.g. on a fetch "
                  "host) send it as Basic auth", "remove the entry if it is stale")]


def environment_checks() -> list[Check]:
    checks = [Check("endpoint", "ok" if not os.environ.get("HF_ENDPOINT") else "warn",
                    f"{endpoint()}" + (" (from HF_ENDPOINT)" if os.environ.get("HF_ENDPOINT") else ""),
                    "" if not os.environ.get("HF_ENDPOINT") else "make sure this mirror serves the model")]
    proxies = {v: os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                          "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")
               if os.environ.get(v)}
    if proxies:
        shown = ", ".join(f"{k}={urlsplit(v).hostname or v}" if "PROXY" in k.upper() and "NO_" not in
                          k.upper() else f"{k}={v}" for k, v in proxies.items())
        checks.append(Check("proxy", "warn", f"proxy variables set: {shown}",
                            "a proxy that rewrites or blocks requests can also cause 401/403"))
    if _truthy("HF_HUB_OFFLINE"):
        checks.append(Check("offline", "fail", "HF_HUB_OFFLINE is set: downloads are disabled",
                            "unset HF_HUB_OFFLINE to download (verify sets it by itself)"))
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and not Path(value).is_file():
            checks.append(Check("CA bundle", "fail", f"{var}={value} does not exist",
                                f"point {var} at a CA bundle file, or unset it"))
        elif value:
            checks.append(Check("CA bundle", "ok", f"{var}={value}"))
    return checks


def cache_checks(cache: Path, source: str) -> list[Check]:
    checks = []
    probe_dir = cache if cache.exists() else next((p for p in cache.parents if p.exists()), cache)
    try:
        if not probe_dir.is_dir():
            raise OSError(f"{probe_dir} is not a folder")
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".provision-doctor-"):
            pass
        writable = True
    except OSError:
        writable = False
    checks.append(Check("cache", "ok" if writable else "fail",
                        f"{cache} (chosen by {source}){'' if writable else ' is not writable'}",
                        "" if writable else "fix the folder's permissions, or pass --cache-dir / set "
                                            "HF_HUB_CACHE to a writable folder"))
    if writable:
        free = shutil.disk_usage(probe_dir).free
        checks.append(Check("disk space", "ok" if free > NEEDED_BYTES else "fail",
                            f"{free / 1e9:.1f} GB free; EdgeTAM needs about {NEEDED_BYTES / 1e6:.0f} MB",
                            "" if free > NEEDED_BYTES else "free some disk space"))
    return checks


def model_checks(cache: Path, transformers_version: str) -> list[Check]:
    checks = []
    for repo in (EDGETAM_REPO, BACKBONE_REPO):
        try:
            commit = resolve_commit(cache, repo, None)
        except ModelMissingError:
            needed = repo == EDGETAM_REPO or needs_backbone_config(transformers_version)
            checks.append(Check(repo, "fail" if needed else "warn", "not in the cache" + (
                "" if needed else f" (transformers {transformers_version} does not need it offline)"),
                "provision fetch --host HOST (or --local), or provision restore model_backups/"))
            continue
        state = check_revision(cache, repo, commit)
        checks.append(Check(repo, "ok" if state.ok else "fail",
                            f"@{commit[:12]}, {len(state.files)} files, {state.size / 1e6:.1f} MB, "
                            + ("intact" if state.ok else f"damaged: {state.problems[0]}"),
                            "" if state.ok else "restore or fetch it again"))
    return checks


def library_checks(versions: dict[str, str]) -> list[Check]:
    verdicts = {name: library_verdict(name, versions.get(name, "missing")) for name in REQUIRED}
    return [Check(name, "ok" if v.ok else "fail", v.detail, v.fix) for name, v in verdicts.items()]


def device_checks() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("devices", "fail", "torch is not importable", "make setup")]
    have = available_devices(torch)
    names = [f"cuda ({torch.cuda.get_device_name(0)})" if d == "cuda" else d for d in have]
    return [Check("devices", "ok", ", ".join(names) + f"; verify --device auto uses {have[0]}")]


# ---------------------------------------------------------------------------- every credential

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
    value = _read(token_file).strip()
    if value:
        found.append(Source("token-file", str(token_file), f"token file {token_file} ({mask(value)})",
                            f"Bearer {value}"))
    stored = _stored_path()
    for name, token in _stored_tokens(stored).items():
        found.append(Source("stored-token", str(stored), f"stored token {name!r} in {stored} ({mask(token)})",
                            f"Bearer {token}", name))
    rc = _netrc_path()
    host = urlsplit(endpoint()).hostname or ""
    entry = _netrc_login(rc, host)
    if entry:
        login, password, name = entry
        found.append(Source("netrc", str(rc), f"{rc} entry for {name} (login {login})",
                            "Basic " + b64encode(f"{login}:{password}".encode()).decode(), name))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="surrogateescape")
    except OSError:
        return ""


def _stored_path() -> Path:
    return Path(os.environ.get("HF_STORED_TOKENS_PATH") or hf_home() / "stored_tokens").expanduser()


def _stored_tokens(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser()
    try:
        parser.read_string(_read(path))
    except configparser.Error:
        return {}
    return {name: parser[name].get("hf_token", "").strip() for name in parser.sections()
            if parser[name].get("hf_token", "").strip()}


def _netrc_path() -> Path:
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()


def _netrc_login(path: Path, host: str) -> tuple[str, str, str] | None:
    """(login, password, the entry: the host or 'default') that a netrc client sends to `host`."""
    if not host or not path.is_file() or str(path) == "/dev/null":
        return None
    try:
        hosts = netrc.netrc(str(path)).hosts
    except (netrc.NetrcParseError, OSError):
        return None
    entry, name = (hosts[host], host) if host in hosts else (hosts.get("default"), "default")
    return (entry[0] or "", entry[2] or "", name) if entry else None


def _probe(url: str, auth: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def online_checks(repo: str = EDGETAM_REPO) -> list[Check]:
    """Probe the endpoint anonymously and with every credential found (the one sent first and the
    shadowed ones), and name the cause of a 401 from the difference."""
    url = f"{endpoint()}/api/models/{repo}/revision/main"
    anon = _probe(url, None)
    if anon == 200:
        checks = [Check("online: anonymous", "ok", f"GET {url} -> 200")]
    elif anon == 0:
        checks = [Check("online: anonymous", "fail", f"GET {url} -> no answer",
                        "the endpoint is not reachable from here: `provision fetch --host HOST` through "
                        "a machine that reaches it")]
    elif anon == 404:
        checks = [Check("online: anonymous", "fail", f"GET {url} -> 404: {repo} is not on {endpoint()}",
                        "probe a repo the endpoint has: provision doctor --online --repo ORG/NAME")]
    else:
        checks = [Check("online: anonymous", "warn", f"GET {url} -> {anon}: {repo} is not public there "
                        "(private or gated), so a rejected credential cannot be told from a missing one",
                        "probe a public repo: --repo ORG/NAME")]
    sent = find_token()[1]
    hub_netrc = hub_reads_netrc(library_versions().get("huggingface_hub", "0"))
    for s in sources():
        status = _probe(url, s.auth)
        if s.kind == "netrc":
            active, name = hub_netrc, "online: netrc"
        else:
            active = bool(sent) and s.label.startswith(f"{sent} (")
            name = "online: token" if active else f"online: shadowed {s.kind} {s.where}"
        if status == 200:
            checks.append(Check(name, "ok", f"{s.label} is accepted"))
        elif status in (401, 403):
            cause = (f"anonymous works, your {s.label} is rejected with {status}" if anon == 200
                     else f"your {s.label} gets {status}")
            checks.append(Check(name, "fail" if active else "warn", cause,
                                "provision doctor --fix puts it aside (with a backup), or remove it by hand; "
                                "meanwhile HF_HUB_DISABLE_IMPLICIT_TOKEN=1 or `provision fetch --local`"))
        else:
            checks.append(Check(name, "warn", f"{s.label} gets {status or 'no answer'}", ""))
    return checks


def diagnose(cache: Path, cache_source: str, online: bool, versions: dict[str, str] | None = None,
             repo: str = EDGETAM_REPO, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run every check; the report's ``exit_code`` is 1 when any check fails.

    The device check imports torch (seconds on a cold start): it starts first, on its own thread,
    and the others run meanwhile; the waits (the online probes, torch) are named on `progress`."""
    devices = in_background(device_checks)
    versions = versions or library_versions()
    checks = [*credential_checks(), *netrc_checks(versions.get("huggingface_hub", "0")),
              *environment_checks(), *cache_checks(cache, cache_source),
              *model_checks(cache, versions.get("transformers", "0")), *library_checks(versions)]
    probes = []
    if online:
        progress(f"probing {endpoint()} anonymously and with each credential found…")
        probes = online_checks(repo)
    progress("asking torch which devices it sees…")
    checks += [*devices(), *probes]
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    return {"checks": [asdict(c) for c in checks], "summary": counts,
            "exit_code": 1 if counts["fail"] else 0}


def render(report: dict[str, Any]) -> str:
    lines = []
    for c in report["checks"]:
        lines.append(f"{c['status']:>4}  {c['name']}: {c['detail']}")
        if c["fix"] and c["status"] != "ok":
            lines.append(f"      fix: {c['fix']}")
    s = report["summary"]
    lines.append(f"{s['ok']} ok, {counted(s['warn'], 'warning')}, {counted(s['fail'], 'failure')}")
    sent = any(c["name"].startswith("credentials") and c["status"] != "ok" for c in report["checks"])
    if sent and not any(c["name"].startswith("online") for c in report["checks"]):
        lines.append("credentials are sent that were not tested: `provision doctor --online` says whether "
                     "the Hub rejects them (and `--fix` puts the rejected ones aside)")
    return "\n".join(lines)
