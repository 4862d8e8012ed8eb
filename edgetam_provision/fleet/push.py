"""`provision push`: verified backups to a fleet of hosts through Ansible, restored and verified there.

Built on Ansible, not on a loop of our own: inventories, parallel forks, check mode, the SSH
config and keys people already have. The playbook ships inside the package (``fleet/push.yml``)
and runs through ``ansible-playbook`` (the optional ``fleet`` extra) with our small JSON stdout
callback (``fleet/callback_plugins``), from which one table is made. Everything travels from
here, checked first (`restore.check_backups`): hosts need nothing from the Hub. Per host: check
the libraries, install our wheel beside the host's own packages (unpacked into a folder of its
own: no pip needed, no dependencies; the wheel is built here by `fleet.wheel`, with the standard
library), copy the backups (checksums: a second run copies nothing), ``provision restore --json`` and
``provision verify --json`` there. With `PushRequest.p2p` the archives travel peer to peer first
(`fleet.p2p`: the controller seeds, hosts share with each other); the copy brings what did not come.
"""

from __future__ import annotations

import contextlib
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
from .hosts import parse_destinations, write_extra_vars, write_inventory
from .rows import HostRow, host_rows
from .wheel import build_wheel

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
    p2p: bool = False  # the archives travel peer to peer (fleet/p2p.py); the copy brings what they do not
    p2p_port: int = 6881  # the first of the ports tried, here and on each host
    p2p_upload_limit: int = 0  # bytes/s the controller sends at most (0: no limit)
    p2p_upload_slots: int | None = None  # hosts the controller sends to at once (None: one per archive)
    p2p_stall: float = 30.0  # a host gives up on the swarm after this long without a byte


@dataclass(frozen=True)
class PushResult:
    """One row per host (`HostRow`); passed when there is at least one and every one passed."""

    check: bool  # Ansible's check mode: nothing was written
    hosts: tuple[HostRow, ...]
    p2p: dict[str, int] | None = None  # push --p2p: what the controller sent in all, against the archives

    @property
    def passed(self) -> bool:
        return bool(self.hosts) and all(r.passed for r in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        """The object of ``push --json``."""
        data: dict[str, Any] = {"check": self.check, "hosts": [r.to_dict() for r in self.hosts],
                                "passed": self.passed}
        if self.p2p is not None:
            data["p2p"] = self.p2p
        return data


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


def find_uv() -> str | None:
    """uv: beside this Python, the one `uv run` names in $UV, or on PATH (the tests install with it
    where this Python has no pip; push itself needs neither)."""
    beside = Path(sys.executable).parent / "uv"
    named = os.environ.get("UV", "")
    if beside.is_file():
        return str(beside)
    return named if named and Path(named).is_file() else shutil.which("uv")


def push(req: PushRequest, progress: ProgressFn = no_progress) -> PushResult:
    """Run the playbook; one row per host. Raises `FleetError` carrying the `PushResult` (every
    row, for the table) unless every host passed."""
    from ..restore.run import check_backups

    if not req.hosts and req.inventory is None:
        raise UsageError("name the hosts: provision push HOST... or an Ansible inventory file",
                         "e.g. provision push lab-mac-1")
    destinations = parse_destinations(req.hosts)  # before anything runs: names are data, never templates
    if req.inventory is not None and not req.inventory.is_file():
        raise UsageError(f"no such inventory: {req.inventory}", "pass an Ansible inventory file")
    runner = ansible_playbook()
    progress(f"checking every byte of the backups in {req.backups} before they travel…")
    check_backups([req.backups])
    with tempfile.TemporaryDirectory(prefix="provision-push-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        seeding = None
        if req.p2p and not req.check:  # seeds until the playbook ends: then nothing listens
            from .p2p import seeding as start_seeding

            seeding = stack.enter_context(start_seeding(req.backups, work, port=req.p2p_port,
                                                        upload_limit=req.p2p_upload_limit,
                                                        upload_slots=req.p2p_upload_slots))
            progress(f"seeding {len(seeding.swarm.handles)} archives peer to peer on port "
                     f"{seeding.swarm.port}…")
        wheel = req.wheel or build_wheel(work)
        names: dict[str, str] = {}
        inventory = req.inventory
        if inventory is None:
            inventory, names = write_inventory(destinations, req.remote_python, work)
        extra = {"provision_backups": str(req.backups.resolve()), "provision_wheel": str(wheel.resolve()),
                 "provision_synthetic": req.synthetic, "provision_device": req.device}
        if seeding is not None:
            extra.update(seeding.variables, provision_p2p_stall=req.p2p_stall)
        if req.remote_python:  # also Ansible's own interpreter: its discovery may pick a broken pyenv shim
            extra["provision_python"] = extra["ansible_python_interpreter"] = req.remote_python
        # ansible-playbook's own options, in their short forms: -f forks, -C check mode, -l limit
        argv = [runner, "-i", str(inventory), str(playbook()), "-e", f"@{write_extra_vars(extra, work)}",
                "-f", str(req.forks)] + (["-C"] if req.check else []) \
            + (["-l", req.limit] if req.limit else []) \
            + (["--tags", ",".join(req.tags)] if req.tags else [])
        env = {"ANSIBLE_PIPELINING": "1",  # one SSH run per task instead of several (no become here)
               **os.environ, "ANSIBLE_STDOUT_CALLBACK": "provision_json",
               "ANSIBLE_CALLBACK_PLUGINS": str(playbook().parent / "callback_plugins"),
               "ANSIBLE_RETRY_FILES_ENABLED": "0",
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0", "ANSIBLE_LOCALHOST_WARNING": "0"}
        progress(f"running the playbook on {', '.join(req.hosts) or inventory.name} ({req.forks} at a time)…")
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        p2p = seeding.summary() if seeding is not None else None
    try:
        result_doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    except (ValueError, RecursionError):
        raise FleetError(f"ansible-playbook failed before it ran (exit {proc.returncode}): "
                         f"{(proc.stderr.strip().splitlines() or [''])[-1][:300]}",
                         "check the inventory and the host pattern (ansible-playbook --list-hosts shows "
                         "them)") from None
    result = PushResult(req.check, tuple(host_rows(result_doc, req.check, names, p2p=p2p is not None)), p2p)
    if not result.passed:
        failed = [r.host for r in result.hosts if not r.passed] or ["(no host matched)"]
        raise FleetError(f"{len(failed)} of {len(result.hosts)} hosts did not pass: {', '.join(failed)}",
                         "the table says why for each; fix those hosts and run push again (the others "
                         "copy nothing the second time)", result=result)
    return result
