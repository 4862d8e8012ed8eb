"""`provision serve`: the verified cache as a read-only Hub endpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..console import StderrProgress
from ..errors import UsageError
from ..serve.guard import HEADER_TIMEOUT_S
from . import render
from .app import CONTEXT, Result, cache_folder, cli, command, shown


@cli.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (anything but "
              "loopback makes the mirror reachable from other machines; it says so).")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True)
@click.option("--repo", "repos", multiple=True, metavar="ID[@REV]",
              help="Repo to serve (repeatable). Default: EdgeTAM and its backbone config repo.")
@click.option("--repo-type", type=click.Choice(["model", "dataset"]), default="model", show_default=True)
@click.option("--all-public", is_flag=True, help="Serve every revision in the cache.")
@click.option("--idle-timeout", type=click.FloatRange(0.1), default=HEADER_TIMEOUT_S, show_default=True,
              help="Close a connection that sends no complete request within this many seconds.")
@command
def serve(cache_dir: Path | None, progress: StderrProgress, debug: bool, host: str, port: int,
          repos: tuple[str, ...], repo_type: str, all_public: bool, idle_timeout: float) -> Result:
    """Serve the verified cache as a read-only Hugging Face endpoint for the LAN.

    Other machines set HF_ENDPOINT=http://THIS-MACHINE:8090 and download with the tools they
    already have (hf download, snapshot_download, from_pretrained, provision fetch --local), whatever
    stale credentials they send. Only revisions whose every blob matches its hash are served. The
    default --host serves this machine only. With --json, one JSON line when it listens (url, host,
    port, repos), the summary when it stops. Ctrl-C stops it (exit 130), SIGTERM too (exit 0).

    Example: provision serve --host 0.0.0.0 --port 8090
    """
    from ..repos import DEFAULT_REPOS, RepoSpec
    from ..serve.run import Listening
    from ..serve.run import serve as do_serve

    if all_public and repos:
        raise UsageError("--all-public and --repo both given", "list repos, or serve them all")
    specs = [RepoSpec.parse(r, None, repo_type) for r in repos] or [RepoSpec(r) for r in DEFAULT_REPOS]
    as_json = bool(click.get_current_context().params.get("as_json"))

    def ready(start: Listening) -> None:
        """One JSON line on stdout with --json (a script learns the URL), else the words on stderr."""
        if as_json:
            sys.stdout.write(json.dumps({"serving": True, **start.to_dict()}) + "\n")
            sys.stdout.flush()
        else:
            progress(render.serve_ready(start))

    result = do_serve(cache_folder(cache_dir, must_exist=True), specs, host, port, all_public, progress,
                      header_timeout=idle_timeout, ready=ready)
    return shown(result, render.serve, exit_code=result.exit_code)
