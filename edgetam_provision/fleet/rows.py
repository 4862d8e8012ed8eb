"""One typed row per fleet host, from Ansible's JSON document: what travelled, what was restored, the verdict.

A host's answers (its probe, ``restore --json``, ``verify --json``, and the module results Ansible
hands back from it) come from the wire: each is read by one checked reader into a dataclass, and
anything else -- not JSON, another shape, a value of another type, a string that is not printable
-- is `BadAnswer`, which makes that host a failed row saying why, never a crash of the push.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

TASKS = {"host": "Check the host's libraries and make the provision folders (not in check mode)",
         "copy": "Copy the backups "
         "(checksums decide what travels)", "restore": "Restore (every byte checked; damaged blobs repaired)",
         "verify": "Verify (an offline EdgeTAM segmentation)",
         "p2p": "Take the archives from peers (p2p; the copy brings what they do not)"}
MAX_TEXT = 500  # a host's string is shown in the table: bounded, printable


class BadAnswer(ValueError):
    """A host's answer that our own command never prints (the reason is the message)."""


@dataclass(frozen=True)
class RestoreAnswer:
    repos: tuple[str, ...]  # repo@commit (12 characters of it)
    statuses: tuple[str, ...]


@dataclass(frozen=True)
class VerifyAnswer:
    passed: bool
    four_cases_ms: float | None
    device: str | None


@dataclass(frozen=True)
class HostRow:
    host: str
    passed: bool
    copied: bool
    repos: tuple[str, ...] = ()
    restore: tuple[str, ...] = ()
    verify: bool | None = None
    four_cases_ms: float | None = None
    device: str | None = None
    error: str = ""
    ansible_said: str = ""
    path: str = ""  # with p2p: how the archives came (p2p, copy, copy (why)); bytes from whom
    from_controller: int | None = None
    from_peers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------- the checked reader

def _parse(stdout: Any) -> Any:
    if not isinstance(stdout, str):
        raise BadAnswer(f"its output is a JSON {_kind(stdout)}, not text")
    try:
        return json.loads(stdout)
    except (ValueError, RecursionError):
        raise BadAnswer(f"not JSON: {_shown(stdout)}") from None


def printable(text: str, keep: str = "") -> str:
    """`text` with every character a terminal would act on (escapes, controls) shown as '?'."""
    return "".join(c if c.isprintable() or c in keep else "?" for c in text)


def _kind(value: Any) -> str:
    """JSON's name for a value's type (or for a Python type's name)."""
    name = value if isinstance(value, str) and value in JSON_NAMES else type(value).__name__
    return JSON_NAMES.get(name, name)


JSON_NAMES = {"dict": "object", "list": "array", "str": "string", "int": "number", "float": "number",
              "bool": "boolean", "NoneType": "null", "number": "number"}


def _shown(text: str) -> str:
    return ascii(text[:60]) + ("…" if len(text) > 60 else "")


def _field(obj: Any, key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    """obj[key] of `kind` (bool is not a number; numbers are finite; text is printable and short)."""
    if not isinstance(obj, dict):
        raise BadAnswer(f"a JSON {_kind(obj)} where an object with {key!r} belongs")
    value = obj.get(key)
    if value is None and optional:
        return None
    numeric = kind in (int, float, (int, float))
    if not isinstance(value, kind) or (numeric and isinstance(value, bool)):
        found = "missing" if value is None else f"a {_kind(value)}"
        raise BadAnswer(f"{key!r} is {found}, not a {_kind(getattr(kind, '__name__', 'number'))}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadAnswer(f"{key!r} is not a finite number")
    if isinstance(value, str) and (len(value) > MAX_TEXT or not value.isprintable()):
        raise BadAnswer(f"{key!r} is not a short printable text: {_shown(value)}")
    return value


def _texts(obj: Any, key: str) -> tuple[str, ...]:
    return tuple(_field({key: v}, key, str) for v in _field(obj, key, list))


def restore_answer(stdout: Any) -> RestoreAnswer:
    """What ``provision restore --json`` printed on the host."""
    doc = _parse(stdout)
    repos: list[str] = []
    statuses: set[str] = set()
    for archive in _field(doc, "archives", list):
        statuses.add(_field(archive, "status", str))
        for repo in _field(archive, "repos", list):
            repo_id = _field(repo, "repo_id", str)
            repos += [f"{repo_id}@{c[:12]}" for c in _texts(repo, "commits")]
    return RestoreAnswer(tuple(repos), tuple(sorted(statuses)))


def verify_answer(stdout: Any) -> VerifyAnswer:
    """What ``provision verify --json`` printed on the host."""
    report = _field(_parse(stdout), "report", dict)
    ms = _field(report, "four_cases_warm_ms", (int, float), optional=True)
    return VerifyAnswer(_field(report, "passed", bool), None if ms is None else float(ms),
                        _field(report, "device", str, optional=True))


def missing_libraries(stdout: Any) -> tuple[str, ...]:
    """The libraries the host's probe found missing."""
    return _texts(_parse(stdout), "missing")


def failure_message(stdout: Any) -> str:
    """The ``message`` of a failed command's JSON answer, or "" when it has none we can show."""
    try:
        return str(_field(_parse(stdout), "message", str))
    except BadAnswer:
        return ""


# ---------------------------------------------------------------------------- rows

@dataclass(frozen=True)
class HostPath:
    """With p2p: how one host got its archives: ``p2p``, ``copy`` or ``copy (why the swarm did not)``."""

    path: str
    from_controller: int | None = None  # payload bytes, as the host counted them
    from_peers: int | None = None


def host_path(out: dict[str, Any] | None) -> HostPath:
    """The path a host took, from its p2p task's answer (None: p2p was not asked for). The answer
    comes from the wire: read by the checked reader, anything else says so in the path."""
    if not out or out.get("skipped") or "stdout" not in out:
        return HostPath("copy")
    try:
        status = _parse(out["stdout"])
        complete, why = _field(status, "complete", bool), _field(status, "why", str)
        counts = [(_field(a, "path", str), _field(a, "from_controller", int), _field(a, "from_peers", int))
                  for a in _field(status, "archives", list)]
    except BadAnswer as exc:
        return HostPath(f"copy (the p2p step answered what provision never prints: {exc})")
    if not complete:
        return HostPath(f"copy ({why or 'the swarm did not deliver'})",
                        sum(c for _, c, _ in counts), sum(p for _, _, p in counts))
    moved = any(way == "p2p" for way, _, _ in counts)
    return HostPath("p2p" if moved else "p2p (already there)",
                    sum(c for _, c, _ in counts), sum(p for _, _, p in counts))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _task(result: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    for play in _list(result.get("plays")):
        for task in _list(_dict(play).get("tasks")):
            if _dict(_dict(task).get("task")).get("name") == name:
                return {h: _dict(out) for h, out in _dict(_dict(task).get("hosts")).items()}
    return {}


def _answer(out: dict[str, Any] | None, reader: Any) -> tuple[Any, str]:
    """(the answer a task printed, or None; why it is not one of ours, or "" when that is not news:
    the task did not run, or failed and says so itself)."""
    if not out or out.get("skipped") or "stdout" not in out:
        return None, ""
    try:
        return reader(out["stdout"]), ""
    except BadAnswer as exc:
        return None, "" if out.get("failed") else str(exc)


def host_rows(result: dict[str, Any], check: bool, names: dict[str, str] | None = None,
              p2p: bool = False) -> list[HostRow]:
    """One row per host from Ansible's JSON output, each under the name the user gave it (`p2p`: with
    the path its archives took)."""
    tasks = {k: _task(result, name) for k, name in TASKS.items()}
    rows = []
    for host, stats in sorted(_dict(result.get("stats")).items()):
        error, said = _first_error(result, host, _dict(stats), tasks["host"].get(host))
        restored, bad_restore = _answer(tasks["restore"].get(host), restore_answer)
        verified, bad_verify = (None, "") if check else _answer(tasks["verify"].get(host), verify_answer)
        if not error and (bad_restore or bad_verify):
            step, why = ("restore", bad_restore) if bad_restore else ("verify", bad_verify)
            error = f"{step} there answered what provision never prints ({why}); a different version there?"
        way = host_path(tasks["p2p"].get(host)) if p2p else HostPath("")
        rows.append(HostRow(
            host=(names or {}).get(host, host),
            passed=not error and (check or bool(verified and verified.passed)),
            copied=bool(tasks["copy"].get(host, {}).get("changed")) or way.path == "p2p",
            repos=restored.repos if restored else (), restore=restored.statuses if restored else (),
            verify=verified.passed if verified and not check else None,
            four_cases_ms=verified.four_cases_ms if verified else None,
            device=verified.device if verified else None, error=error, ansible_said=said,
            path=way.path, from_controller=way.from_controller, from_peers=way.from_peers))
    return rows


#: Ansible's words for a host that failed -> the cause, and what to do (first match wins)
CAUSES = (
    (("Permission denied", "Authentication failed"), "auth: the host rejected our SSH keys",
     "check ansible_user / the key (ssh HOST must log in without a password)"),
    (("pyenv: ", "No start of json char found", "Module result deserialization failed"),
     "its Python does not run (a pyenv shim?)",
     "choose another Python on the host: /path/to/python3 (a real interpreter)"),
    (("/bin/sh: ", "not found", "No such file or directory", "interpreter discovery"),
     "no Python found at the interpreter Ansible tried",
     "choose another Python on the host: /path/to/python3"),
    (("Could not resolve", "Connection refused", "Connection timed out", "No route to host",
      "Failed to connect"), "unreachable", "check the host name, port and network"),
)


def _cause(text: str, unreachable: bool) -> str:
    for words, cause, fix in CAUSES:
        if any(w in text for w in words):
            return f"{cause}; {fix}"
    return "unreachable; check the host name, port and network" if unreachable else ""


def _first_error(result: dict[str, Any], host: str, stats: dict[str, Any],
                 probe: dict[str, Any] | None) -> tuple[str, str]:
    """Why a host did not pass, as (a cause in one line with what to do, Ansible's own words)."""
    if probe:
        try:
            missing = missing_libraries(probe.get("stdout"))
        except BadAnswer:
            missing = ()
        if missing:
            return f"missing on the host: {', '.join(missing)} (install them into its Python)", ""
    for play in _list(result.get("plays")):
        for task in _list(_dict(play).get("tasks")):
            out = _dict(_dict(_dict(task).get("hosts")).get(host))
            if not (out.get("unreachable") or out.get("failed")):
                continue
            said = (failure_message(out.get("stdout")) or str(out.get("msg") or "")).strip()
            raw = " ".join(str(out.get(k) or "") for k in ("msg", "module_stderr", "module_stdout", "stderr"))
            last = printable((said.splitlines() or ["failed"])[-1][:200])
            cause = _cause(raw, bool(out.get("unreachable")))
            if cause:
                return cause, printable(raw.strip()[:2000], keep="\n")
            name = str(_dict(_dict(task).get("task")).get("name") or "a task")
            return f"{name.split(' (')[0]}: {last}", printable(raw.strip()[:2000], keep="\n")
    if stats.get("unreachable"):
        return "unreachable; check the host name, port and network", ""
    return "", ""
