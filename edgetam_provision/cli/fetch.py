"""`provision fetch`: download on a clean host (or here, with clean credentials) and pull back."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..console import StderrProgress
from ..errors import UsageError
from ..fetch.limits import STALL_S, TIMEOUT_S
from . import render
from .app import CONTEXT, DEFAULT_BACKUPS, Result, cache_folder, cli, command, shown


@cli.command(context_settings=CONTEXT)
@click.option("--host", metavar="HOST", help="Clean host to download on: an ~/.ssh/config alias, "
              "user@host:port or ssh://user@host:port.")
@click.option("--local", is_flag=True, help="Download here instead, with clean credentials.")
@click.option("--repo", "repos", multiple=True, metavar="ID[@REV]",
              help="Repo to fetch (repeatable). Default: EdgeTAM and its backbone config repo.")
@click.option("--revision", help="Revision for every --repo that names none (a branch, tag or commit).")
@click.option("--repo-type", type=click.Choice(["model", "dataset"]), default="model", show_default=True)
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (repeatable), as hf "
              "download --include.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BACKUPS,
              show_default=True, help="Where the archives, manifest.json and SHA256SUMS go.")
@click.option("--endpoint", metavar="URL", help="Hub endpoint used for the download (a mirror).")
@click.option("--token-env", metavar="VAR", help="Send the token in $VAR (gated repos), over stdin only.")
@click.option("--remote-python", default=None, help="Python on the host [default: python3; "
              "with --local: this one].")
@click.option("--bootstrap", is_flag=True, help="Install huggingface_hub into a temporary folder "
              "on the host when it lacks it.")
@click.option("--fresh", is_flag=True, help="Discard what an earlier, cut run left on the host "
              "(it is resumed otherwise).")
@click.option("-p", "--port", type=int, help="SSH port (overrides ssh config).")
@click.option("-l", "--user", help="SSH user (overrides ssh config).")
@click.option("-i", "--identity", type=click.Path(dir_okay=False), help="Private key file.")
@click.option("-F", "--ssh-config", type=click.Path(dir_okay=False), help="ssh config file [~/.ssh/config].")
@click.option("--known-hosts", type=click.Path(dir_okay=False),
              help="known_hosts file to check and append to [OpenSSH's files].")
@click.option("--accept-new-host-key", is_flag=True,
              help="Trust an unknown host key (one line appended); a changed key is always refused.")
@click.option("--timeout", type=float, default=TIMEOUT_S, show_default=True,
              help="Deadline in seconds for connecting and for each silent stretch (the host's download "
              "progress counts as life).")
@click.option("--stall", type=click.FloatRange(1), default=STALL_S, show_default=True,
              help="Give up when less than 1 MiB moves in this many seconds (the host's download, "
              "or archive bytes reaching here); raise it on a link slower than 1 MiB per that long.")
@click.option("--transfer", type=click.Choice(["auto", "openssh", "stream"]), default="auto",
              show_default=True, help="How archive bytes travel: auto = over the agent's channel during the "
              "download on a LAN; else, after packing, OpenSSH's ssh client in parallel ranges from 256 MiB "
              "(16 MiB on a slow link) and the agent's channel below; openssh or stream force one.")
@click.option("--streams", type=click.IntRange(0, 16), default=0, help="Parallel ssh streams per archive "
              "(openssh) [default: 4 from 16 MiB, else 1].")
@click.option("--restore", "then_restore", is_flag=True, help="Then restore into the cache and verify.")
@click.option("--no-quality-gate", "no_gate", is_flag=True,
              help="In the verify that --restore runs, judge only that the outputs are valid.")
@click.option("--verify-out", type=click.Path(file_okay=False, path_type=Path), default=Path("verify_output"),
              show_default=True, help="Folder for the overlays of the verify that --restore runs.")
@command(failed=render.failed_fetch)
def fetch(cache_dir: Path | None, progress: StderrProgress, debug: bool, host: str | None, local: bool,
          repos: tuple[str, ...], revision: str | None, repo_type: str, include: tuple[str, ...],
          exclude: tuple[str, ...], out: Path, endpoint: str | None, token_env: str | None,
          remote_python: str | None, bootstrap: bool, fresh: bool, port: int | None, user: str | None,
          identity: str | None, ssh_config: str | None, known_hosts: str | None,
          accept_new_host_key: bool, timeout: float, stall: float, transfer: str, streams: int,
          then_restore: bool, no_gate: bool, verify_out: Path) -> Result:
    """Download on a clean host over SSH, pack, pull back and verify the archives.

    The host runs one fixed command; the program, repo ids and any token travel on stdin. Stale
    credentials there (HF_TOKEN, token files, ~/.netrc) are never sent. The host's download reports
    progress every second and resumes after a cut. On a LAN the archive is packed and sent while
    the host still downloads; otherwise it is pulled after packing. Either way it lands (resumable,
    hashed while receiving) in --out with manifest.json, and one already there is not pulled again.

    Example: provision fetch --host gpu-box --restore
    """
    from ..fetch.request import FetchRequest
    from ..pipeline import fetch as do_fetch
    from ..repos import DEFAULT_REPOS, EDGETAM_REPO, RepoSpec
    from ..verify.run import VerifyRequest

    if host and local:
        raise UsageError("--host and --local both given", "use --host HOST to download there, or "
                                                          "--local to download here")
    if not host and not local:
        raise UsageError("say where to download: --host HOST or --local",
                         "e.g. provision fetch --host gpu-box")
    token = None
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise UsageError(f"${token_env} is not set", f"export {token_env}=hf_… first")
    cache = cache_folder(cache_dir)
    specs = tuple(RepoSpec.parse(r, revision, repo_type) for r in repos) or tuple(
        RepoSpec(r, revision) for r in DEFAULT_REPOS)
    req = FetchRequest(
        specs=specs, out=out.resolve(), host=host, python=remote_python, endpoint=endpoint, token=token,
        bootstrap=bootstrap, fresh=fresh, include=include, exclude=exclude, streams=streams,
        ssh={"port": port, "user": user, "identity": identity, "ssh_config": ssh_config,
             "known_hosts": known_hosts},
        timeout=timeout, stall=stall, accept_new_host_key=accept_new_host_key, transfer=transfer,
        then_restore=cache if then_restore else None,
        verify=VerifyRequest(cache=str(cache), repo_id=EDGETAM_REPO, out=str(verify_out),
                             quality_gate=not no_gate, debug=debug), debug=debug)
    bar = sys.stderr.isatty() and not progress.quiet
    return shown(do_fetch(req, progress, bar), render.fetch)
