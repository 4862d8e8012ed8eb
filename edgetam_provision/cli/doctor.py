"""`provision doctor`: why downloads fail here, and what to do."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import StderrProgress
from .app import CONTEXT, Result, cli, command


@cli.command(context_settings=CONTEXT)
@click.option("--online", is_flag=True, help="Also probe the endpoint, anonymously and with the "
              "credentials found, to name the cause of a 401.")
@command
def doctor(cache_dir: Path | None, progress: StderrProgress, debug: bool, online: bool) -> Result:
    """Say exactly why model downloads fail on this machine, and what to do.

    Checks the credentials huggingface_hub would send (masked), ~/.netrc, endpoint, proxies,
    offline flag, CA bundles, the cache folder, the provisioned models, library versions and
    devices. Exit code 1 when any check fails.

    Example: provision doctor --online
    """
    from ..doctor import diagnose
    from ..doctor import render as render_doctor
    from ..hub.cache import resolve_cache_dir

    loc = resolve_cache_dir(cache_dir)
    return diagnose(loc.path, loc.source, online), render_doctor
