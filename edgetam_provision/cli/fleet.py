"""`provision push`: restore and verify on many hosts, through Ansible."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..console import StderrProgress
from ..errors import FleetError
from . import render
from .app import CONTEXT, DEFAULT_BACKUPS, Result, cli, command, shown
from .hints import with_options

if TYPE_CHECKING:
    from ..fleet.push import PushResult


@cli.command(context_settings=CONTEXT)
@click.argument("hosts", nargs=-1, metavar="[HOST]...")
@click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path), help="An Ansible inventory.")
@click.option("--limit", metavar="PATTERN", help="Ansible host pattern within the inventory.")
@click.option("--backups", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BACKUPS,
              show_default=True, help="The verified backups to push.")
@click.option("--remote-python", help="The hosts' Python (with torch, transformers, ...) [default: "
              "ansible_python_interpreter, else python3].")
@click.option("--synthetic", is_flag=True, help="Verify with the self-test (random weights) on each host.")
@click.option("--device", type=click.Choice(["auto", "mps", "cuda", "cpu"]), default="auto",
              show_default=True)
@click.option("--forks", type=click.IntRange(1, 500), default=5, show_default=True,
              help="Hosts worked on at once.")
@click.option("--check", is_flag=True, help="Ansible check mode: say what would change, write nothing.")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path),
              help="The edgetam-provision wheel to install there [default: built from this checkout].")
@click.option("--p2p", is_flag=True, help="Hosts take the archives from each other over BitTorrent v2 "
              "(SHA-256 pieces; needs libtorrent, the p2p extra); a host that cannot gets the copy.")
@click.option("--p2p-port", type=click.IntRange(1, 65535), default=6881, show_default=True,
              help="The first port tried for --p2p, here and on the hosts (the next 9 if taken).")
@command(cache=False, failed=render.failed_push)
def push(cache_dir: Path | None, progress: StderrProgress, debug: bool, hosts: tuple[str, ...],
         inventory: Path | None, limit: str | None, backups: Path, remote_python: str | None, synthetic: bool,
         device: str, forks: int, check: bool, wheel: Path | None, p2p: bool, p2p_port: int) -> Result:
    """Push verified backups to many hosts through Ansible; restore and verify on each.

    Runs the playbook shipped in the package (usable on its own with ansible-playbook) on HOSTs or
    an --inventory, in parallel: installs this tool beside each host's own libraries, copies the
    backups (checksums: a second run copies nothing), restores and verifies there, and prints one
    table. Exit 0 only if every host passed; a failing host never stops the others. With --p2p
    the hosts share the archives peer to peer (this machine seeds until the push ends; each
    archive is checked against the manifest before restore); the table says which path each
    host's archives took and how many bytes came from here and from its peers.

    Example: provision push --inventory lab.ini --synthetic
    """
    from ..fleet.push import PushRequest, PushResult
    from ..fleet.push import push as do_push

    req = PushRequest(hosts=hosts, backups=backups, inventory=inventory, limit=limit,
                      remote_python=remote_python, synthetic=synthetic, forks=forks, check=check,
                      wheel=wheel, device=device, p2p=p2p, p2p_port=p2p_port)
    try:
        result = do_push(req, progress)
    except FleetError as err:
        if isinstance(err.result, PushResult):
            if debug:
                _ansible_said(err.result, progress)
            err.result = _said(err.result)
        raise
    if debug:
        _ansible_said(result, progress)
    return shown(_said(result), render.push)


def _said(result: PushResult) -> PushResult:
    """The rows as the CLI says them: what to do for a host names the option that does it."""
    return replace(result, hosts=tuple(replace(row, error=with_options(row.error)) for row in result.hosts))


def _ansible_said(result: PushResult, progress: StderrProgress) -> None:
    """Ansible's own words behind each failed host's cause (--debug)."""
    for row in result.hosts:
        if row.ansible_said:
            progress(f"{row.host}: Ansible said: {row.ansible_said}")
