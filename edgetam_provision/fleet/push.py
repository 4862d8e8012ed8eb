"""`provision push`: verified backups to a fleet of hosts through Ansible, restored and verified there.

Built on Ansible, not on a loop of our own: inventories, parallel forks, check mode, the SSH
config and keys people already have. The playbook ships inside the package (``fleet/push.yml``)
and runs through ``ansible-playbook`` (the optional ``fleet`` extra) with our small JSON stdout
callback (``fleet/callback_plugins``), from which one table is made. Everything travels from
here, checked first (`restore.check_backups`): hosts need nothing from the Hub. Per host: check
the libraries, install our wheel beside the host's own packages (unpacked into a folder of its
own: no pip needed, no dependencies),
copy the backups (checksums: a second run copies nothing), ``provision restore --json`` and
``provision verify --json`` there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..console import ProgressFn, no_progress
from ..errors import FleetError, UsageError

TASKS = {"host": "Check the host's libraries and make the provision folders (not in check mode)",
         "copy": "Copy the backups "
         "(checksums decide what travels)", "restore": "Restore (every byte checked; damaged blobs repaired)",
         "verify": "Verify (an offline EdgeTAM segmentation)"}
FLEET_HINT = "pip install 'edgetam-provision[fleet]' (Ansible), or uv sync --extra fleet"


@dataclass(frozen=True)
class PushRequest:
    hosts: tuple[str, ...]
    backups: Path
    inventory: Path | None = None
    limit: str | None = None
    remote_python: str | None = None
    synthetic: bool = False
    forks: int = 5
    check: bool = False
    wheel: Path | None = None
    device: str = "auto"
    tags: tuple[str, ...] = ()  # Ansible tags: install, copy, restore, verify (default: all)


def playbook() -> Path:
    return Path(str(resources.files("edgetam_provision.fleet") / "push.yml"))


def ansible_playbook() -> str:
    """The ansible-playbook beside this Python (a venv), else on PATH; a usage error without it."""
    here = Path(sys.executable).parent / "ansible-playbook"
    found = str(here) if here.is_file() else shutil.which("ansible-playbook")
    if not found:
        raise UsageError("provision push needs Ansible (ansible-playbook), which is not installed",
                         FLEET_HINT)
    return found


WHEEL_HINT = "pass --wheel PATH, built with `uv build --wheel` or `pip wheel --no-deps .`"


def find_uv() -> str | None:
    """uv: beside this Python, the one `uv run` names in $UV, or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    named = os.environ.get("UV", "")
    if beside.is_file():
        return str(beside)
    return named if named and Path(named).is_file() else shutil.which("uv")


def wheel_builder(root: Path, dest: Path) -> list[str] | None:
    """How to build the wheel here: pip's frontend where this Python has pip (it builds with the
    setuptools already installed, offline); else uv's (a uv venv has no pip; uv fetches setuptools
    into an isolated build environment, or takes it from its cache); None without either."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        return [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                "--disable-pip-version-check", "-w", str(dest), str(root)]
    uv = find_uv()
    if uv:
        return [uv, "build", "--wheel", "--quiet", "--out-dir", str(dest), str(root)]
    return None


def build_wheel(dest: Path) -> Path:
    """This package as a wheel (from its source checkout), for the hosts to install."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise UsageError("cannot build a wheel of this installation (no source checkout)", WHEEL_HINT)
    argv = wheel_builder(root, dest)
    if argv is None:
        raise UsageError("building the wheel needs uv or pip, and this Python has neither", WHEEL_HINT)
    proc = subprocess.run(argv, capture_output=True, text=True)
    wheels = sorted(dest.glob("edgetam_provision-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise UsageError(f"building the wheel with {Path(argv[0]).name} failed: "
                         f"{proc.stderr.strip()[-300:]}", WHEEL_HINT)
    return wheels[-1]


def inventory_for(hosts: tuple[str, ...], python: str | None, folder: Path) -> tuple[Path, dict[str, str]]:
    """An INI inventory (``user@host:port`` split as ssh would) and inventory name -> the name the
    user gave: each host is named by its host name (numbered only when two share one)."""
    from ..fetch.ssh import parse_destination

    lines, names = ["[fleet]"], {}
    for host in hosts:
        user, name, port = parse_destination(host)
        inv = name if name not in names else f"{name}-{len(names)}"
        names[inv] = host
        parts = [inv, f"ansible_host={name}"] + ([f"ansible_port={port}"] if port else []) \
            + ([f"ansible_user={user}"] if user else [])
        lines.append(" ".join(parts))
    if python:
        lines += ["", "[fleet:vars]", f"ansible_python_interpreter={python}"]
    path = folder / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path, names


def push(req: PushRequest, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Run the playbook; one row per host. Raises `FleetError` (with the rows) unless all passed."""
    from ..restore.run import check_backups

    if not req.hosts and req.inventory is None:
        raise UsageError("name the hosts: provision push HOST... or --inventory FILE",
                         "e.g. provision push lab-mac-1")
    if req.inventory is not None and not req.inventory.is_file():
        raise UsageError(f"no such inventory: {req.inventory}", "pass an Ansible inventory file")
    runner = ansible_playbook()
    progress(f"checking every byte of the backups in {req.backups} before they travel…")
    check_backups([req.backups])
    with tempfile.TemporaryDirectory(prefix="provision-push-") as tmp:
        work = Path(tmp)
        wheel = req.wheel or build_wheel(work)
        names: dict[str, str] = {}
        inventory = req.inventory
        if inventory is None:
            inventory, names = inventory_for(req.hosts, req.remote_python, work)
        extra = {"provision_backups": str(req.backups.resolve()), "provision_wheel": str(wheel.resolve()),
                 "provision_synthetic": req.synthetic, "provision_device": req.device}
        if req.remote_python:  # also Ansible's own interpreter: its discovery may pick a broken pyenv shim
            extra["provision_python"] = extra["ansible_python_interpreter"] = req.remote_python
        (work / "vars.json").write_text(json.dumps(extra))
        argv = [runner, "-i", str(inventory), str(playbook()), "-e", f"@{work / 'vars.json'}",
                "--forks", str(req.forks)] + (["--check"] if req.check else []) \
            + (["--limit", req.limit] if req.limit else []) \
            + (["--tags", ",".join(req.tags)] if req.tags else [])
        env = {"ANSIBLE_PIPELINING": "1",  # one SSH run per task instead of several (no become here)
               **os.environ, "ANSIBLE_STDOUT_CALLBACK": "provision_json",
               "ANSIBLE_CALLBACK_PLUGINS": str(playbook().parent / "callback_plugins"),
               "ANSIBLE_RETRY_FILES_ENABLED": "0",
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0", "ANSIBLE_LOCALHOST_WARNING": "0"}
        progress(f"running the playbook on {', '.join(req.hosts) or inventory.name} ({req.forks} at a time)…")
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    try:
        result = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        raise FleetError(f"ansible-playbook failed before it ran (exit {proc.returncode}): "
                         f"{(proc.stderr.strip().splitlines() or [''])[-1][:300]}",
                         "check the inventory and --limit (ansible-playbook --list-hosts shows "
                         "them)") from None
    rows = host_rows(result, req.check, names)
    data = {"check": req.check, "hosts": rows, "passed": all(r["passed"] for r in rows) and bool(rows)}
    if not data["passed"]:
        failed = [r["host"] for r in rows if not r["passed"]] or ["(no host matched)"]
        err = FleetError(f"{len(failed)} of {len(rows)} hosts did not pass: {', '.join(failed)}",
                         "the table says why for each; fix those hosts and run push again (the others "
                         "copy nothing the second time)")
        data.update(err.to_dict())
    return data


def _task(result: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    for play in result.get("plays", []):
        for task in play.get("tasks", []):
            if task.get("task", {}).get("name") == name:
                return task.get("hosts", {})
    return {}


def _json(out: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return json.loads((out or {}).get("stdout") or "{}")
    except ValueError:
        return {}


def host_rows(result: dict[str, Any], check: bool,
              names: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per host from Ansible's JSON output: what travelled, what was restored, the verdict;
    each host under the name the user gave it."""
    tasks = {k: _task(result, name) for k, name in TASKS.items()}
    rows = []
    for host, stats in sorted(result.get("stats", {}).items()):
        restored, verified = _json(tasks["restore"].get(host)), _json(tasks["verify"].get(host))
        report = verified.get("report", {})
        error, said = _first_error(result, host, stats, tasks["host"].get(host))
        archives = restored.get("archives", [])
        passed = not error and (check or bool(report.get("passed")))
        rows.append({
            "host": (names or {}).get(host, host), "passed": passed,
            "copied": bool(tasks["copy"].get(host, {}).get("changed")),
            "repos": [f"{r['repo_id']}@{c[:12]}" for a in archives for r in a["repos"] for c in r["commits"]],
            "restore": sorted({a["status"] for a in archives}) if archives else [],
            "verify": None if check or not report else bool(report.get("passed")),
            "four_cases_ms": report.get("four_cases_warm_ms"), "device": report.get("device"),
            "error": error, "ansible_said": said})
    return rows


#: Ansible's words for a host that failed -> the cause, and what to do (first match wins)
CAUSES = (
    (("Permission denied", "Authentication failed"), "auth: the host rejected our SSH keys",
     "check ansible_user / the key (ssh HOST must log in without a password)"),
    (("pyenv: ", "No start of json char found", "Module result deserialization failed"),
     "its Python does not run (a pyenv shim?)", "pass --remote-python /path/to/python3 (a real interpreter)"),
    (("/bin/sh: ", "not found", "No such file or directory", "interpreter discovery"),
     "no Python found at the interpreter Ansible tried", "pass --remote-python /path/to/python3"),
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
    missing = _json(probe).get("missing") if probe else None
    if missing:
        return f"missing on the host: {', '.join(missing)} (install them into its Python)", ""
    for play in result.get("plays", []):
        for task in play.get("tasks", []):
            out = task.get("hosts", {}).get(host)
            if not out or not (out.get("unreachable") or out.get("failed")):
                continue
            said = str(_json(out).get("message") or out.get("msg") or "").strip()
            raw = " ".join(str(out.get(k) or "") for k in ("msg", "module_stderr", "module_stdout", "stderr"))
            last = (said.splitlines() or ["failed"])[-1][:200]
            cause = _cause(raw, bool(out.get("unreachable")))
            if cause:
                return cause, raw.strip()[:2000]
            return f"{task['task']['name'].split(' (')[0]}: {last}", raw.strip()[:2000]
    if stats.get("unreachable"):
        return "unreachable; check the host name, port and network", ""
    return "", ""
