"""`provision doctor`: say exactly why model downloads fail on this machine, and what to do.

Every check returns ok / warn / fail with a fix. Credentials are looked up in huggingface_hub's
own order and shown masked (``hf_…abcd``), never in full. ``--online`` probes the endpoint
anonymously and with each credential found, and names the cause of a 401 from the difference.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    CacheError,
    DownloadBlocked,
    EnvironmentProblem,
    IntegrityError,
    ModelMissingError,
    ProvisionError,
)
from ..hub.cache import check_revision, resolve_commit
from ..integrity.space import free_bytes
from ..parallel import in_background
from ..repos import BACKBONE_REPO, EDGETAM_REPO
from ..verify.runtime import (
    REQUIRED,
    available_devices,
    hub_reads_netrc,
    library_verdict,
    library_versions,
    needs_backbone_config,
)
from .credentials import (
    endpoint,
    find_token,
    hub_token,
    mask,
    netrc_login,
    netrc_path,
    netrc_unreadable,
    probe,
    sources,
    stored_path,
    token_sources,
    truthy,
)

NEEDED_BYTES = 60_000_000  # EdgeTAM (37 MB of weights) + backbone config, with headroom


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""
    exit_code: int = 0  # a failure's code in the exit-code table (its kind of error)


def failed(name: str, kind: type[ProvisionError], detail: str, fix: str = "") -> Check:
    return Check(name, "fail", detail, fix, kind.exit_code)


#: doctor's exit code: the table's code of the first of these kinds that fails (what blocks a
#: download first, the models last: a model is missing because it could not be downloaded)
EXIT_ORDER = (DownloadBlocked, CacheError, EnvironmentProblem, ModelMissingError, IntegrityError)


def exit_code(checks: Iterable[Check]) -> int:
    codes = {c.exit_code for c in checks if c.status == "fail"}
    return next((k.exit_code for k in EXIT_ORDER if k.exit_code in codes), min(codes, default=0))


@dataclass(frozen=True)
class DoctorReport:
    """Every check, in the order run; the verdict (`exit_code`) follows the exit-code table."""

    checks: tuple[Check, ...]

    @property
    def summary(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("ok", "warn", "fail")}

    @property
    def exit_code(self) -> int:
        return exit_code(self.checks)

    def to_dict(self) -> dict[str, Any]:
        """The object of ``doctor --json``: its ``exit_code`` is the verdict's."""
        return {"checks": [asdict(c) for c in self.checks], "summary": self.summary,
                "exit_code": self.exit_code}


def credential_checks() -> list[Check]:
    """Every credential source, the one sent first and the shadowed ones after it, masked."""
    sources = token_sources()
    token, source = find_token()
    checks: list[Check] = []
    if truthy("HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        checks.append(Check("credentials", "ok", "HF_HUB_DISABLE_IMPLICIT_TOKEN=1: no token is sent"))
    elif token:
        checks.append(Check("credentials", "warn",
                            f"{mask(token)} from {source} is sent with every request; if it is stale, "
                            "even public models fail with 401",
                            "test it with the online check of doctor; unset it, or run with "
                            "HF_HUB_DISABLE_IMPLICIT_TOKEN=1, or fetch the models here"))
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
    stored = stored_path()
    if stored.is_file():
        names = [ln.strip("[] \n") for ln in stored.read_text(errors="replace").splitlines()
                 if ln.startswith("[")]
        checks.append(Check("stored tokens", "ok", f"named tokens in {stored}: {', '.join(names) or 'none'}"
                            " (only the active one is sent)"))
    return checks


def netrc_entry() -> tuple[Path, str, tuple[str, str]] | None:
    """(netrc file, matched host or 'default', (login, password)) for the endpoint's host."""
    path = netrc_path()
    entry = netrc_login(path, urlsplit(endpoint()).hostname or "")
    return (path, entry[2], (entry[0], entry[1])) if entry else None


def netrc_checks(hub_version: str) -> list[Check]:
    unreadable = netrc_unreadable(netrc_path())
    if unreadable:
        reads = hub_reads_netrc(hub_version)
        return [Check("netrc", "fail" if reads else "warn", f"{netrc_path()} {unreadable}: huggingface_hub "
                      f"{hub_version} " + ("(requests) cannot read it" if reads else "does not read it, but "
                      "requests-based clients (huggingface_hub < 1.0, e.g. on a fetch host) cannot"),
                      "save it as UTF-8 text (or remove the bytes that are not)",
                      DownloadBlocked.exit_code if reads else 0)]
    entry = netrc_entry()
    if entry is None:
        return [Check("netrc", "ok", "no ~/.netrc entry for the endpoint's host")]
    path, host, _cred = entry
    if hub_reads_netrc(hub_version):
        return [failed("netrc", DownloadBlocked, f"{path} has an entry for {host}; huggingface_hub "
                       f"{hub_version} (requests) sends it as Basic auth, replacing any token",
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
    if truthy("HF_HUB_OFFLINE"):
        checks.append(failed("offline", DownloadBlocked, "HF_HUB_OFFLINE is set: downloads are disabled",
                             "unset HF_HUB_OFFLINE to download (verify sets it by itself)"))
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and not Path(value).is_file():
            checks.append(failed("CA bundle", DownloadBlocked, f"{var}={value} does not exist",
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
    checks.append(Check("cache", "ok", f"{cache} (chosen by {source})") if writable else
                  failed("cache", CacheError, f"{cache} (chosen by {source}) is not writable",
                         "fix the folder's permissions, or choose another cache folder (or set "
                         "HF_HUB_CACHE) that is writable"))
    if writable:
        free = free_bytes(probe_dir)
        detail = f"{free / 1e9:.1f} GB free; EdgeTAM needs about {NEEDED_BYTES / 1e6:.0f} MB"
        checks.append(Check("disk space", "ok", detail) if free > NEEDED_BYTES else
                      failed("disk space", CacheError, detail, "free some disk space"))
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
                "fetch them on a host you can ssh to, or restore them from backups",
                ModelMissingError.exit_code if needed else 0))
            continue
        state = check_revision(cache, repo, commit)
        checks.append(Check(repo, "ok" if state.ok else "fail",
                            f"@{commit[:12]}, {len(state.files)} files, {state.size / 1e6:.1f} MB, "
                            + ("intact" if state.ok else f"damaged: {state.problems[0]}"),
                            "" if state.ok else "restore or fetch it again",
                            0 if state.ok else IntegrityError.exit_code))
    return checks


def library_checks(versions: dict[str, str]) -> list[Check]:
    verdicts = {name: library_verdict(name, versions.get(name, "missing")) for name in REQUIRED}
    return [Check(name, "ok", v.detail, v.fix) if v.ok else failed(name, EnvironmentProblem, v.detail, v.fix)
            for name, v in verdicts.items()]


def device_checks() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [failed("devices", EnvironmentProblem, "torch is not importable", "make setup")]
    have = available_devices(torch)
    names = [f"cuda ({torch.cuda.get_device_name(0)})" if d == "cuda" else d for d in have]
    return [Check("devices", "ok", ", ".join(names) + f"; verify picks {have[0]} unless told otherwise")]


def online_checks(repo: str = EDGETAM_REPO) -> list[Check]:
    """Probe the endpoint anonymously and with every credential found (the one sent first and the
    shadowed ones), and name the cause of a 401 from the difference."""
    url = f"{endpoint()}/api/models/{repo}/revision/main"
    anon = probe(url, None)
    if anon == 200:
        checks = [Check("online: anonymous", "ok", f"GET {url} -> 200")]
    elif anon == 0:
        checks = [failed("online: anonymous", DownloadBlocked, f"GET {url} -> no answer",
                         "the endpoint is not reachable from here: fetch through a host you can ssh to "
                         "that reaches it")]
    elif anon == 404:
        checks = [failed("online: anonymous", DownloadBlocked, f"GET {url} -> 404: {repo} is not on "
                         f"{endpoint()}", "probe a repo the endpoint has")]
    else:
        checks = [Check("online: anonymous", "warn", f"GET {url} -> {anon}: {repo} is not public there "
                        "(private or gated), so a rejected credential cannot be told from a missing one",
                        "choose a public repo to probe")]
    sent = find_token()[1]
    hub_netrc = hub_reads_netrc(library_versions().get("huggingface_hub", "0"))
    for s in sources():
        status = probe(url, s.auth)
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
            fix = (f"run `unset {s.where}` in your shell and remove its export from your shell's start-up "
                   "files (no program can unset a variable of your shell)" if s.kind == "env" else
                   "doctor's fix puts it aside (with a backup), or remove it by hand")
            checks.append(Check(name, "fail" if active else "warn", cause, fix + "; meanwhile "
                                "HF_HUB_DISABLE_IMPLICIT_TOKEN=1 or fetch the models here",
                                DownloadBlocked.exit_code if active else 0))
        else:
            checks.append(Check(name, "warn", f"{s.label} gets {status or 'no answer'}", ""))
    return checks


def diagnose(cache: Path, cache_source: str, online: bool, versions: dict[str, str] | None = None,
             repo: str = EDGETAM_REPO, progress: Callable[[str], None] = lambda _: None) -> DoctorReport:
    """Run every check; the report's verdict follows the exit-code table (`exit_code`).

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
    return DoctorReport(tuple(checks))

