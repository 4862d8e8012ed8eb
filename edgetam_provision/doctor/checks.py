"""`provision doctor`: say exactly why model downloads fail on this machine, and what to do.

Every check returns ok / warn / fail with a fix. Credentials are looked up in huggingface_hub's
own order and shown masked (``hf_…abcd``), never in full. ``--online`` probes the endpoint
anonymously and with each credential found, and names the cause of a 401 from the difference.
"""

from __future__ import annotations

import netrc
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ModelMissingError
from ..hub.cache import BACKBONE_REPO, EDGETAM_REPO, check_revision, resolve_commit
from ..verify.runtime import (
    REQUIRED,
    available_devices,
    hub_reads_netrc,
    library_verdict,
    library_versions,
    needs_backbone_config,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
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
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    if not path.is_file() or path == Path("/dev/null"):
        return None
    try:
        rc = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError):
        return None
    host = urlsplit(endpoint()).hostname or ""
    if host in rc.hosts:
        login, _acct, password = rc.hosts[host]
        return path, host, (login or "", password or "")
    if "default" in rc.hosts:
        login, _acct, password = rc.hosts["default"]
        return path, "default", (login or "", password or "")
    return None


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
    """Probe the endpoint anonymously and with each credential found; name the cause of a 401."""
    url = f"{endpoint()}/api/models/{repo}/revision/main"
    anon = _probe(url, None)
    unreachable = ("the endpoint does not serve the model to anyone from here: use "
                   "`provision fetch --host HOST` through a machine that reaches it")
    checks = [Check("online: anonymous", "ok" if anon == 200 else "fail",
                    f"GET {url} -> {anon or 'no answer'}", "" if anon == 200 else unreachable)]
    token, source = find_token()
    if token:
        status = _probe(url, f"Bearer {token}")
        if status == 200:
            checks.append(Check("online: token", "ok", f"{mask(token)} from {source} is accepted"))
        else:
            cause = (f"anonymous works, your {source} ({mask(token)}) is rejected with {status}"
                     if anon == 200 else f"your {source} gets {status}")
            checks.append(Check("online: token", "fail", cause,
                                f"unset it (or delete the {source}), or run with "
                                "HF_HUB_DISABLE_IMPLICIT_TOKEN=1, or use `provision fetch --local`"))
    entry = netrc_entry()
    if entry:
        path, host, (login, password) = entry
        status = _probe(url, "Basic " + b64encode(f"{login}:{password}".encode()).decode())
        sent = hub_reads_netrc(library_versions().get("huggingface_hub", "0"))
        if status != 200:
            checks.append(Check("online: netrc", "fail" if sent else "warn",
                                f"{'anonymous works, ' if anon == 200 else ''}the {path} entry for {host} "
                                f"is rejected with {status} (requests-based clients send it)",
                                "remove that entry, or run with NETRC=/dev/null"))
        else:
            checks.append(Check("online: netrc", "ok", f"the {path} entry for {host} is accepted"))
    return checks


def diagnose(cache: Path, cache_source: str, online: bool, versions: dict[str, str] | None = None,
             repo: str = EDGETAM_REPO) -> dict[str, Any]:
    """Run every check; the report's ``exit_code`` is 1 when any check fails."""
    versions = versions or library_versions()
    checks = [*credential_checks(), *netrc_checks(versions.get("huggingface_hub", "0")),
              *environment_checks(), *cache_checks(cache, cache_source),
              *model_checks(cache, versions.get("transformers", "0")), *library_checks(versions),
              *device_checks()]
    if online:
        checks += online_checks(repo)
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
    lines.append(f"{s['ok']} ok, {s['warn']} warnings, {s['fail']} failures")
    return "\n".join(lines)
