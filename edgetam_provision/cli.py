"""The `provision` command line: parse, call one library function, render. Nothing else.

Heavy libraries (torch, transformers, paramiko) are imported inside the commands that use them,
so `provision --help` stays fast.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import EXIT_CODES, InternalError, Interrupted, ProvisionError
from .output import emit, fail, human_size, progress_printer

DEFAULT_BACKUPS = Path("model_backups")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _exit_code_epilog() -> str:
    rows = "\n".join(f"  {code:>3}  {desc.splitlines()[0]}" for code, (_n, desc) in EXIT_CODES.items())
    return "\b\nExit codes:\n" + rows


@click.group(context_settings=CONTEXT, epilog=_exit_code_epilog())
@click.version_option(__version__, prog_name="provision")
@click.option("--debug", is_flag=True, envvar="PROVISION_DEBUG", help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Get Hugging Face models (EdgeTAM by default) onto this machine when the direct download
    fails, and prove the install works."""
    ctx.obj = {"debug": debug}


def command(fn: Callable[..., tuple[dict[str, Any], Callable[[dict[str, Any]], str]]]) -> Callable:
    """Wrap a command: --json and --cache-dir options, errors -> one line + hint + exit code."""

    @click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                  help="Hub cache folder (default: as huggingface_hub resolves it).")
    @click.pass_context
    @functools.wraps(fn)
    def wrapper(ctx: click.Context, as_json: bool, cache_dir: Path | None, **kwargs: Any) -> None:
        try:
            result, render = fn(cache_dir=cache_dir, progress=progress_printer(as_json), **kwargs)
            emit(result, as_json, render)
            code = result.get("exit_code", 0)
        except ProvisionError as err:
            fail(err, as_json)
            code = err.exit_code
        except KeyboardInterrupt:
            fail(Interrupted("interrupted", "nothing half-written was left behind; run it again"),
                 as_json)
            code = Interrupted.exit_code
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            fail(InternalError(f"internal error: {type(exc).__name__}: {exc}",
                               "run again with --debug and report the traceback"), as_json)
            code = InternalError.exit_code
        ctx.exit(code)

    return wrapper


def _cache(cache_dir: Path | None) -> Path:
    from .hfcache import resolve_cache_dir

    return resolve_cache_dir(cache_dir).path


# ---------------------------------------------------------------------------- backup

@cli.command(context_settings=CONTEXT)
@click.argument("repos", nargs=-1, metavar="[REPO[@REV]]...")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BACKUPS,
              show_default=True, help="Folder for the archives, manifest.json and SHA256SUMS.")
@click.option("--compress", type=click.Choice(["none", "gzip", "zstd"]), default="none",
              show_default=True, help="Weights do not compress; gzip costs time for nothing.")
@command
def backup(cache_dir: Path | None, progress: Callable[[str], None], repos: tuple[str, ...],
           out: Path, compress: str) -> tuple[dict[str, Any], Callable]:
    """Pack cached repo revisions into verified archives.

    Default repos: yonigozlan/EdgeTAM-hf and timm/repvit_m1.dist_in1k. Every blob is hashed
    first; a damaged revision is refused.

    Example: provision backup yonigozlan/EdgeTAM-hf --out model_backups/
    """
    from .backup import backup as do_backup
    from .hfcache import RepoSpec

    specs = [RepoSpec.parse(r) for r in repos] or None
    progress("checking and packing cached revisions…")
    results = do_backup(_cache(cache_dir), specs, out, compress)
    data = {"out": str(out), "backups": [r.to_dict() for r in results]}

    def render(d: dict[str, Any]) -> str:
        return "\n".join(f"{b['status']:>18}  {b['archive']}  {b['repo_id']}@{b['commit'][:12]}  "
                         f"{human_size(b['size'])}  sha256 {b['sha256'][:16]}…" for b in d["backups"])

    return data, render


# ---------------------------------------------------------------------------- restore

def _render_plan(d: dict[str, Any]) -> str:
    lines = []
    for a in d["archives"]:
        repos = ", ".join(f"{r['repo_id']}@{','.join(c[:12] for c in r['commits'])}"
                          for r in a["repos"])
        lines.append(f"{a['status']:>15}  {Path(a['archive']).name}  {repos}  "
                     f"({a['new_blobs']} new blobs, {human_size(a['new_bytes'])}; "
                     f"checked by {a['checked_by']})")
        if d.get("dry_run"):
            lines.extend(f"{'':>17}{x['state']:>7} {x['kind']:<5} {x['path']}"
                         + (f"  {x['detail']}" if x["kind"] == "ref" else "")
                         for x in a["actions"])
    lines.append(("would write" if d.get("dry_run") else "wrote")
                 + f" {d['writes']} entries into {d['cache']}")
    return "\n".join(lines)


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check everything and print the plan; write nothing.")
@command
def restore(cache_dir: Path | None, progress: Callable[[str], None], paths: tuple[Path, ...],
            dry_run: bool) -> tuple[dict[str, Any], Callable]:
    """Verify backups and restore them atomically into the hub cache.

    PATHS are archives or folders of them (default model_backups/). Every archive is treated as
    hostile: all members are validated before anything is written, every blob is hashed, and
    blobs, snapshot links and refs are published in that order. Old `tar czf` backups of
    ~/.cache/huggingface/hub/models--ORG--NAME restore too.

    Example: provision restore model_backups/
    """
    from .restore import plan_restore
    from .restore import restore as do_restore

    cache = _cache(cache_dir)
    targets = list(paths) or [DEFAULT_BACKUPS]
    plan = plan_restore(targets, cache) if dry_run else do_restore(targets, cache, progress)
    return {**plan.to_dict(), "dry_run": dry_run}, _render_plan


# ---------------------------------------------------------------------------- status

@cli.command(context_settings=CONTEXT)
@click.option("--backups", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BACKUPS,
              show_default=True, help="Backups folder to list.")
@click.option("--quick", is_flag=True, help="Check structure only; do not hash the blobs.")
@command
def status(cache_dir: Path | None, progress: Callable[[str], None], backups: Path,
           quick: bool) -> tuple[dict[str, Any], Callable]:
    """Show backups and cached repos: revision, size, integrity.

    Example: provision status --json
    """
    from .status import backups_status, cache_status

    data = {"backups_folder": str(backups), "backups": backups_status(backups),
            **cache_status(_cache(cache_dir), hash_blobs=not quick)}
    bad = [r for r in data["revisions"] if r["integrity"] == "bad"]
    if bad:
        data["exit_code"] = 1

    def render(d: dict[str, Any]) -> str:
        lines = [f"backups in {d['backups_folder']}:"]
        lines += [f"  {b['archive']}  {human_size(b['size'])}  {b['state']}" for b in d["backups"]] \
            or ["  (none)"]
        lines.append(f"cache {d['cache']}:")
        for r in d["revisions"]:
            refs = f" ({', '.join(r['refs'])})" if r["refs"] else ""
            lines.append(f"  {r['repo_id']}@{r['commit'][:12]}{refs}  {r['files']} files  "
                         f"{human_size(r['size'])}  {r['integrity']}")
            lines += [f"      problem: {p}" for p in r["problems"]]
        if not d["revisions"]:
            lines.append("  (no model repos)")
        return "\n".join(lines)

    return data, render


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="provision")
