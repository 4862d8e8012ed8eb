"""`provision doctor`: why downloads fail here, and what to do (`--fix`: do it, with a way back)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from ..console import StderrProgress
from ..errors import UsageError
from . import render
from .app import CONTEXT, Result, cli, command, shown
from .hints import with_options


@cli.command(context_settings=CONTEXT)
@click.option("--online", is_flag=True, help="Also probe the endpoint, anonymously and with the "
              "credentials found, to name the cause of a 401.")
@click.option("--repo", default=None, metavar="[ORG/]NAME",
              help="The public repo the online probes ask for [default: EdgeTAM].")
@click.option("--fix", is_flag=True, help="Put aside the credentials the endpoint rejects (token file, "
              "stored tokens, ~/.netrc entry), each with a backup; asks first on a terminal.")
@click.option("--fix-shell", is_flag=True, help="With --fix: also comment out the HF_TOKEN exports of "
              "your shell start-up files (otherwise they are named, with the line to run).")
@click.option("-y", "--yes", is_flag=True, help="With --fix: do not ask (for scripts).")
@click.option("--undo", is_flag=True, help="Put back the files a --fix changed: give the backups it named.")
@click.argument("backups", nargs=-1, type=click.Path(dir_okay=False, path_type=Path), metavar="[BACKUP]...")
@command(failed=render.failed_fix)  # the one failure that carries a result: a fix the shell undoes
def doctor(cache_dir: Path | None, progress: StderrProgress, debug: bool, online: bool, repo: str | None,
           fix: bool, fix_shell: bool, yes: bool, undo: bool, backups: tuple[Path, ...]) -> Result:
    """Say exactly why model downloads fail on this machine, and what to do.

    Checks the credentials huggingface_hub would send (masked), ~/.netrc, endpoint, proxies,
    offline flag, CA bundles, the cache folder, the provisioned models, library versions and
    devices. The exit code is the table's for the first kind that fails, in this order: download
    blocked (16), cache (5), environment (8), model missing (7), integrity (1). --fix acts only on
    credentials the endpoint rejects while it answers anonymous requests, and prints the command
    that undoes it; --undo keeps whatever changed since.

    Example: provision doctor --online
    """
    from ..repos import EDGETAM_REPO, RepoSpec

    probe_repo = RepoSpec.parse(repo).repo_id if repo else EDGETAM_REPO
    if undo or backups:
        if not (undo and backups):
            raise UsageError("backups go with --undo", "provision doctor --undo BACKUP... (as --fix printed)")
        from ..doctor.fix import undo as put_back

        return shown(put_back(list(backups)), render.undone)
    if fix:
        from ..doctor.fix import fix as do_fix

        def confirm(plan: list[str]) -> bool:
            for line in plan:
                progress(f"will: {line}")
            if yes:
                return True
            if not sys.stdin.isatty():
                raise UsageError("--fix changes files and no terminal can confirm it", "add --yes")
            return click.confirm("make these changes?", default=False, err=True)

        return shown(do_fix(probe_repo, confirm, fix_shell, progress), render.fixed)
    if fix_shell or yes:
        raise UsageError("--fix-shell and --yes go with --fix", "provision doctor --online --fix")
    from ..doctor.checks import diagnose
    from ..hub.cache import GIVEN, resolve_cache_dir

    loc = resolve_cache_dir(cache_dir)
    source = "--cache-dir" if loc.source == GIVEN else loc.source  # what chose it, as the user said it
    report = diagnose(loc.path, source, online, repo=probe_repo, progress=progress)
    report = replace(report, checks=tuple(replace(c, fix=with_options(c.fix)) for c in report.checks))
    return shown(report, render.doctor, exit_code=report.exit_code)  # --json says the fixes as the text does
