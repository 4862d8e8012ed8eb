"""`provision backup`, `restore`, `check` and `status`: backups in and out of the cache."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import click

from ..console import StderrProgress
from ..errors import UsageError
from ..hub.manifest import HubCheck
from . import render
from .app import CONTEXT, DEFAULT_BACKUPS, Output, Result, cache_folder, cli, command, shown


@cli.command(context_settings=CONTEXT)
@click.argument("repos", nargs=-1, metavar="[REPO[@REV]]...")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BACKUPS,
              show_default=True, help="Folder for the archives, manifest.json and SHA256SUMS.")
@click.option("--compress", type=click.Choice(["none", "gzip", "zstd"]), default="none",
              show_default=True, help="Weights do not compress; gzip costs time for nothing.")
@command
def backup(cache_dir: Path | None, progress: StderrProgress, debug: bool, repos: tuple[str, ...], out: Path,
           compress: str) -> Result:
    """Pack cached repo revisions into verified archives.

    Default repos: yonigozlan/EdgeTAM-hf and timm/repvit_m1.dist_in1k. Every blob is hashed
    first; a damaged revision is refused.

    Example: provision backup yonigozlan/EdgeTAM-hf --out model_backups/
    """
    from ..backup import BackupReport
    from ..backup import backup as do_backup
    from ..repos import RepoSpec

    specs = [RepoSpec.parse(r) for r in repos] or None
    progress("checking and packing cached revisions…")
    results = do_backup(cache_folder(cache_dir), specs, out, compress)
    return shown(BackupReport(out, tuple(results)), render.backup)


# ---------------------------------------------------------------------------- restore

def resolved(paths: tuple[Path, ...]) -> list[Path]:
    """The paths given (default model_backups/) resolved: what a message names is where we looked."""
    return [p.resolve() for p in paths or (DEFAULT_BACKUPS,)]


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Run every check a restore runs (every byte hashed, "
              "write permission, free space) and print the plan; write nothing.")
@click.option("--keep-refs", is_flag=True, help="Keep refs the cache already has (e.g. main) where the "
              "backup's point elsewhere.")
@command
def restore(cache_dir: Path | None, progress: StderrProgress, debug: bool, paths: tuple[Path, ...],
            dry_run: bool, keep_refs: bool) -> Result:
    """Verify backups and restore them atomically into the hub cache.

    PATHS are archives or folders of them (default model_backups/). Every archive is treated as
    hostile: all members are validated before anything is written, every byte is hashed on every
    run (blobs the cache holds are hashed and repaired when damaged), and blobs, snapshot links
    and refs are published in that order. Exit 0 means every restored revision loads offline.
    Hand-made `tar` backups of ~/.cache/huggingface/hub (whole or per repo, gz/bz2/xz) restore too.

    Example: provision restore model_backups/
    """
    from ..restore.run import restore as do_restore

    plan = do_restore(resolved(paths), cache_folder(cache_dir).resolve(), progress, dry_run=dry_run,
                      keep_refs=keep_refs)
    return Output(lambda: {**plan.to_dict(written=not dry_run), "dry_run": dry_run},
                  functools.partial(render.restore_plan, plan, dry_run))


@cli.command(name="check", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--hub", "at_hub", is_flag=True, help="Also compare each archive's manifest entry with the "
              "Hub's listing of its commit, asked from here without credentials (skipped, and said, "
              "when offline or unreachable).")
@click.option("--endpoint", metavar="URL", help="Hub endpoint for --hub [HF_ENDPOINT, else huggingface.co].")
@click.option("--token-env", metavar="VAR", help="For --hub: send the token in $VAR (gated or private "
              "repos); no other credential is ever sent.")
@command(cache=False)
def check(cache_dir: Path | None, progress: StderrProgress, debug: bool, paths: tuple[Path, ...],
          at_hub: bool, endpoint: str | None, token_env: str | None) -> Result:
    """Check backup files on their own, with no cache involved.

    Every member is validated and every byte hashed, against manifest.json / SHA256SUMS where
    present: for a backup copied to a USB disk. Exit 0 means `restore` would accept it; with
    --hub, also that each archive equals the Hub's listing (commit, paths, sizes, blob hashes)
    where it was checked. A disagreement is exit 1.

    Example: provision check /Volumes/usb/model_backups --hub
    """
    from ..restore.run import check_backups, find_archives

    if (endpoint or token_env) and not at_hub:
        raise UsageError("--endpoint and --token-env go with --hub", "add --hub to check at the Hub")
    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        raise UsageError(f"${token_env} is not set", f"export {token_env}=hf_… first")
    where = resolved(paths)
    plan = check_backups(where, progress)
    hub: list[tuple[Path, HubCheck]] = []
    if at_hub:
        from ..trust.hub_check import check_backups_at_hub
        from ..trust.hub_listing import endpoint_of

        url = endpoint_of(endpoint)
        progress(f"asking {url} for the listings…")
        hub = check_backups_at_hub(find_archives(where)[0], url, token)

    def data() -> dict[str, Any]:
        said: dict[str, Any] = {**plan.to_dict(written=False), "dry_run": True, "check_only": True}
        if at_hub:
            said["hub"] = [{"archive": str(a), **c.to_dict()} for a, c in hub]
        return said

    return Output(data, functools.partial(render.restore_plan, plan, dry_run=True, check_only=True, hub=hub))


# ---------------------------------------------------------------------------- status

@cli.command(context_settings=CONTEXT)
@click.option("--backups", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BACKUPS,
              show_default=True, help="Backups folder to list.")
@click.option("--quick", is_flag=True, help="Check structure only; do not hash the blobs.")
@command
def status(cache_dir: Path | None, progress: StderrProgress, debug: bool, backups: Path,
           quick: bool) -> Result:
    """Show backups and cached repos: revision, size, integrity.

    Example: provision status --json
    """
    from ..status import status as do_status

    if backups != DEFAULT_BACKUPS and not backups.is_dir():
        raise UsageError(f"no such backups folder: {backups.resolve()}", "pass the folder that holds the "
                         "archives")
    report = do_status(cache_folder(cache_dir, must_exist=True).resolve(), backups.resolve(),
                       hash_blobs=not quick)
    return shown(report, render.status, exit_code=report.exit_code)
