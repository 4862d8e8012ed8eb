"""The `provision` command line: parse, call one library function, render. Nothing else.

Heavy libraries (torch, transformers, paramiko) are imported inside the library functions that
use them, so `provision --help` stays fast. Renderings live in `render`.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__, render
from .errors import EXIT_CODES, InternalError, Interrupted, ProvisionError, UsageError
from .output import StderrProgress, emit, fail
from .remote import TIMEOUT_S

DEFAULT_BACKUPS = Path("model_backups")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
Result = tuple[dict[str, Any], Callable[[dict[str, Any]], str]]


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


def command(fn: Callable[..., Result]) -> Callable:
    """Wrap a command: --json and --cache-dir options, errors -> one line + hint + exit code."""

    @click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                  help="Hub cache folder (default: as huggingface_hub resolves it).")
    @click.pass_context
    @functools.wraps(fn)
    def wrapper(ctx: click.Context, as_json: bool, cache_dir: Path | None, **kwargs: Any) -> None:
        debug = bool(ctx.obj and ctx.obj.get("debug"))
        try:
            result, renderer = fn(cache_dir=cache_dir, progress=StderrProgress(quiet=as_json), debug=debug,
                                  **kwargs)
            emit(result, as_json, renderer)
            code = result.get("exit_code", 0)
            if code and result.get("message"):  # a failed verdict: the full result, then the error
                fail(ProvisionError(result["message"], result.get("hint", "")), as_json=False)
        except ProvisionError as err:
            fail(err, as_json)
            code = err.exit_code
        except KeyboardInterrupt:
            fail(Interrupted("interrupted", "what was finished is kept (pulls resume, the cache is "
                                            "consistent); run the same command again"), as_json)
            code = Interrupted.exit_code
        except Exception as exc:
            if debug:
                traceback.print_exc()
            fail(InternalError(f"internal error: {type(exc).__name__}: {exc}",
                               "run again with --debug and report the traceback"), as_json)
            code = InternalError.exit_code
        ctx.exit(code)

    return wrapper


def _cache(cache_dir: Path | None, must_exist: bool = False) -> Path:
    from .hfcache import resolve_cache_dir

    loc = resolve_cache_dir(cache_dir)
    if loc.note:
        sys.stderr.write(loc.note + "\n")
    if must_exist and cache_dir is not None and not loc.path.is_dir():
        raise UsageError(f"no such cache folder: {cache_dir}", "pass an existing --cache-dir, or leave it "
                         "out to use huggingface_hub's own")
    return loc.path


# ---------------------------------------------------------------------------- backup

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
    from .backup import backup as do_backup
    from .hfcache import RepoSpec

    specs = [RepoSpec.parse(r) for r in repos] or None
    progress("checking and packing cached revisions…")
    results = do_backup(_cache(cache_dir), specs, out, compress)
    return {"out": str(out), "backups": [r.to_dict() for r in results]}, render.backup


# ---------------------------------------------------------------------------- restore

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
    run (blobs the cache holds are compared and repaired when damaged), and blobs, snapshot links
    and refs are published in that order. Exit 0 means every restored revision loads offline.
    Hand-made `tar` backups of ~/.cache/huggingface/hub (whole or per repo, gz/bz2/xz) restore too.

    Example: provision restore model_backups/
    """
    from .restore import restore as do_restore

    plan = do_restore(list(paths) or [DEFAULT_BACKUPS], _cache(cache_dir), progress, dry_run=dry_run,
                      keep_refs=keep_refs)
    return {**plan.to_dict(), "dry_run": dry_run}, render.restore_plan


@cli.command(name="check", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@command
def check(cache_dir: Path | None, progress: StderrProgress, debug: bool, paths: tuple[Path, ...]) -> Result:
    """Check backup files on their own, with no cache involved.

    Every member is validated and every byte hashed, against manifest.json / SHA256SUMS where
    present: for a backup copied to a USB disk. Exit 0 means `restore` would accept it.

    Example: provision check /Volumes/usb/model_backups
    """
    from .restore import check_backups

    plan = check_backups(list(paths) or [DEFAULT_BACKUPS], progress)
    return {**plan.to_dict(), "dry_run": True, "check_only": True}, render.restore_plan


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
    from .status import status as do_status

    if backups != DEFAULT_BACKUPS and not backups.is_dir():
        raise UsageError(f"no such backups folder: {backups}", "pass the folder that holds the archives")
    return do_status(_cache(cache_dir, must_exist=True), backups, hash_blobs=not quick), render.status


# ---------------------------------------------------------------------------- verify

def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n:
        raise UsageError(f"{what} must be {n} comma-separated numbers, got {text!r}",
                         "e.g. --point 500,375 or --box 75,275,1725,850")
    return vals


@cli.command(context_settings=CONTEXT)
@click.option("--device", type=click.Choice(["auto", "mps", "cuda", "cpu"]), default="auto",
              show_default=True, help="auto prefers MPS, then CUDA, then CPU.")
@click.option("--image", metavar="PATH|scene",
              help="Verify on this picture (the built-in prompts are scaled to it) [default: the truck "
              "photo of the reference run]; 'scene': the built-in scene with ground-truth masks.")
@click.option("--point", "points", multiple=True, metavar="X,Y", help="Prompt point (repeatable).")
@click.option("--box", metavar="X0,Y0,X1,Y1", help="Prompt box.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("verify_output"),
              show_default=True, help="Folder for the overlay PNGs.")
@click.option("--min-iou", type=float, default=0.5, show_default=True,
              help="With --image scene: IoU with ground truth the best of each prompt's three masks must "
              "reach.")
@click.option("--no-quality-gate", "no_gate", is_flag=True, help="Report the scores, judge only that "
              "the outputs are valid (the real checkpoint is otherwise compared with the reference run).")
@click.option("--runs", type=click.IntRange(1, 100), default=None,
              help="Warm repetitions per case; the median is reported [default: 3, on CUDA 10].")
@click.option("--repo", default=None, metavar="REPO[@REV]",
              help="Model repo to verify [default: yonigozlan/EdgeTAM-hf].")
@click.option("--synthetic", is_flag=True,
              help="Self-test with random weights of the exact architecture; needs no download.")
@click.option("--or-synthetic", is_flag=True,
              help="Run the self-test instead when the model is not cached (used by make setup).")
@click.option("--eager", is_flag=True, help="Plain model: no folded backbone, no CUDA graphs (both are "
              "used only when they match the plain result).")
@command
def verify(cache_dir: Path | None, progress: StderrProgress, debug: bool, device: str, image: str | None,
           points: tuple[str, ...], box: str | None, out: Path, min_iou: float, no_gate: bool,
           runs: int | None,
           repo: str | None, synthetic: bool, or_synthetic: bool, eager: bool) -> Result:
    """Prove the install works: EdgeTAM segments the user's four test cases, offline.

    Loads the model from the local cache only (a fresh process with HF_HUB_OFFLINE=1), encodes the
    truck photo of the reference run once and runs one point, two points, a box and two objects on
    it; reports timings and predicted IoU scores beside the reference run's, and writes one overlay
    PNG per case. The real checkpoint passes when its scores match the reference within 0.05 and
    its masks lie where the prompts are.

    Example: provision verify --device cpu --json
    """
    from .hfcache import EDGETAM_REPO, RepoSpec
    from .verify import VerifyRequest, verify_install

    spec = RepoSpec.parse(repo or EDGETAM_REPO)
    req = VerifyRequest(cache=str(_cache(cache_dir)), repo_id=spec.repo_id, revision=spec.revision,
                        device=device, image=image, quality_gate=not no_gate,
                        points=[_floats(p, 2, "--point") for p in points] or None,
                        box=_floats(box, 4, "--box") if box else None, out=str(out), min_iou=min_iou,
                        runs=runs, synthetic=synthetic, accelerate=not eager, debug=debug)
    return verify_install(req, or_synthetic, progress), render.verify


# ---------------------------------------------------------------------------- fetch

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
@click.option("--transfer", type=click.Choice(["auto", "openssh", "stream", "sftp"]), default="auto",
              show_default=True, help="How archive bytes travel: auto = over the agent's channel during the "
              "download on a LAN, else after packing by OpenSSH's ssh client when installed or "
              "paramiko's exec channel; stream = the agent's channel; sftp for accounts without a shell.")
@click.option("--streams", type=click.IntRange(0, 16), default=0, help="Parallel ssh streams per archive "
              "(openssh) [default: 4 from 256 MiB, else 1].")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--restore", "then_restore", is_flag=True, help="Then restore into the cache and verify.")
@click.option("--no-quality-gate", "no_gate", is_flag=True,
              help="In the verify that --restore runs, judge only that the outputs are valid.")
@click.option("--verify-out", type=click.Path(file_okay=False, path_type=Path), default=Path("verify_output"),
              show_default=True, help="Folder for the overlays of the verify that --restore runs.")
@command
def fetch(cache_dir: Path | None, progress: StderrProgress, debug: bool, host: str | None, local: bool,
          repos: tuple[str, ...], revision: str | None, repo_type: str, include: tuple[str, ...],
          exclude: tuple[str, ...], out: Path, endpoint: str | None, token_env: str | None,
          remote_python: str | None, bootstrap: bool, fresh: bool, port: int | None, user: str | None,
          identity: str | None, ssh_config: str | None, known_hosts: str | None,
          accept_new_host_key: bool, timeout: float, transfer: str, streams: int, quiet: bool,
          then_restore: bool, no_gate: bool, verify_out: Path) -> Result:
    """Download on a clean host over SSH, pack, pull back and verify the archives.

    The host runs one fixed command; the program, repo ids and any token travel on stdin. Stale
    credentials there (HF_TOKEN, token files, ~/.netrc) are never sent. The host's download reports
    progress every second and resumes after a cut. On a LAN the archive is packed and sent while
    the host still downloads; otherwise it is pulled after packing. Either way it lands (resumable,
    hashed while receiving) in --out with manifest.json, and one already there is not pulled again.

    Example: provision fetch --host gpu-box --restore
    """
    from .fetch import FetchRequest
    from .fetch import fetch as do_fetch
    from .hfcache import DEFAULT_REPOS, EDGETAM_REPO, RepoSpec
    from .verify import VerifyRequest

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
    cache = _cache(cache_dir)
    specs = tuple(RepoSpec.parse(r, revision, repo_type) for r in repos) or tuple(
        RepoSpec(r, revision) for r in DEFAULT_REPOS)
    req = FetchRequest(
        specs=specs, out=out, host=host, python=remote_python, endpoint=endpoint, token=token,
        bootstrap=bootstrap, fresh=fresh, include=include, exclude=exclude, streams=streams,
        ssh={"port": port, "user": user, "identity": identity, "ssh_config": ssh_config,
             "known_hosts": known_hosts},
        timeout=timeout, accept_new_host_key=accept_new_host_key, transfer=transfer,
        then_restore=cache if then_restore else None,
        verify=VerifyRequest(cache=str(cache), repo_id=EDGETAM_REPO, out=str(verify_out),
                             quality_gate=not no_gate, debug=debug))
    if quiet:
        progress.quiet = True
    bar = sys.stderr.isatty() and not progress.quiet
    return do_fetch(req, progress, bar), render.fetch


# ---------------------------------------------------------------------------- push

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
@command
def push(cache_dir: Path | None, progress: StderrProgress, debug: bool, hosts: tuple[str, ...],
         inventory: Path | None, limit: str | None, backups: Path, remote_python: str | None, synthetic: bool,
         device: str, forks: int, check: bool, wheel: Path | None) -> Result:
    """Push verified backups to many hosts through Ansible; restore and verify on each.

    Runs the playbook shipped in the package (usable on its own with ansible-playbook) on HOSTs or
    an --inventory, in parallel: installs this tool beside each host's own libraries, copies the
    backups (checksums: a second run copies nothing), restores and verifies there, and prints one
    table. Exit 0 only if every host passed; a failing host never stops the others.

    Example: provision push --inventory lab.ini --synthetic
    """
    from .fleet import PushRequest
    from .fleet import push as do_push

    req = PushRequest(hosts=hosts, backups=backups, inventory=inventory, limit=limit,
                      remote_python=remote_python, synthetic=synthetic, forks=forks, check=check,
                      wheel=wheel, device=device)
    return do_push(req, progress), render.push


# ---------------------------------------------------------------------------- serve

@cli.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (anything but "
              "loopback makes the mirror reachable from other machines; it says so).")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True)
@click.option("--repo", "repos", multiple=True, metavar="ID[@REV]",
              help="Repo to serve (repeatable). Default: EdgeTAM and its backbone config repo.")
@click.option("--repo-type", type=click.Choice(["model", "dataset"]), default="model", show_default=True)
@click.option("--all-public", is_flag=True, help="Serve every revision in the cache.")
@command
def serve(cache_dir: Path | None, progress: StderrProgress, debug: bool, host: str, port: int,
          repos: tuple[str, ...], repo_type: str, all_public: bool) -> Result:
    """Serve the verified cache as a read-only Hugging Face endpoint for the LAN.

    Other machines set HF_ENDPOINT=http://THIS-MACHINE:8090 and download with the tools they
    already have (hf download, snapshot_download, from_pretrained, provision fetch --local), whatever
    stale credentials they send. Only revisions whose every blob matches its hash are served.

    Example: provision serve --host 0.0.0.0 --port 8090
    """
    from .hfcache import DEFAULT_REPOS, RepoSpec
    from .serve import serve as do_serve

    if all_public and repos:
        raise UsageError("--all-public and --repo both given", "list repos, or serve them all")
    specs = [RepoSpec.parse(r, None, repo_type) for r in repos] or [RepoSpec(r) for r in DEFAULT_REPOS]
    result = do_serve(_cache(cache_dir, must_exist=True), specs, host, port, all_public, progress)
    return result, render.serve


# ---------------------------------------------------------------------------- doctor

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
    from .doctor import diagnose
    from .doctor import render as render_doctor
    from .hfcache import resolve_cache_dir

    loc = resolve_cache_dir(cache_dir)
    return diagnose(loc.path, loc.source, online), render_doctor


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="provision")
