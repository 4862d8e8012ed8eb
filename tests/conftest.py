"""Shared fixtures: a local Hub stand-in, real caches made by huggingface_hub, a CLI runner."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import settings

# Tests never read or write the user's folders, nor take their settings: huggingface_hub's home (its
# cache, its token) and the agent's work folder (under XDG_CACHE_HOME) are this run's own, set
# before huggingface_hub is imported (it reads them once); the user's Hub variables are dropped.
USER_HUB_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH",
                 "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE",
                 "HF_HUB_DISABLE_IMPLICIT_TOKEN")
assert "huggingface_hub" not in sys.modules, "conftest must set the test home before huggingface_hub loads"
RUN_HOME = Path(tempfile.mkdtemp(prefix="provision-tests-"))
atexit.register(shutil.rmtree, RUN_HOME, ignore_errors=True)
for _var in USER_HUB_VARS:
    os.environ.pop(_var, None)
os.environ.update(HF_HOME=str(RUN_HOME / "hf"), XDG_CACHE_HOME=str(RUN_HOME / "xdg"))
import huggingface_hub.constants  # noqa: E402, F401 - read now, not first under a test's monkeypatched env

from edgetam_provision.cli.app import cli  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from hub_standin import HubRepo, HubStandIn  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
MISSING_COMPONENT = "needs openssh-server"  # the skip reason of tests that need a system component
MISSING_WHEELS = "needs huggingface_hub 0.36's wheels"  # prepared by .ci/run
MISSING_SERVE = "needs the serve extra (uvicorn)"
MISSING_FLEET = "needs the fleet extra (ansible-core)"
MISSING_P2P = "needs the p2p extra (libtorrent)"
#: skips that mean part of the suite did not run: loud always, a failure under PROVISION_REQUIRE_ALL
MISSING = (MISSING_COMPONENT, MISSING_WHEELS, MISSING_SERVE, MISSING_FLEET, MISSING_P2P)
#: a test using one of these needs the OpenSSH server: marked `ssh`
SSH_FIXTURES = {"sshd", "hosts", "shim_hosts"}
MODEL_FIXTURES = {"edgetam_files", "edgetam_cache", "verified"}  # these build the model: marked `slow`
HUB036 = ["huggingface_hub==0.36.2", "requests", "urllib3", "charset-normalizer", "idna", "certifi"]
WHEELS = REPO_ROOT / ".wheels" / "hub036"  # .ci/run downloads them: the suite then needs no index

# Hypothesis: "dev", quick and random, by default; "ci" (CI=true) the same examples on every run and
# more of them; HYPOTHESIS_PROFILE names either. No deadline: the machines these run on are shared.
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("ci", max_examples=200, derandomize=True, database=None, print_blob=True,
                          deadline=None)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI", "").lower() == "true" else "dev")
settings.load_profile(PROFILE)


def examples(ci: int, dev: int) -> int:
    """How many examples a costly property runs: `ci` under the ci profile, `dev` in the quick loop."""
    return ci if PROFILE == "ci" else dev


def tiny_files(seed: int = 1) -> dict[str, bytes]:
    rnd = hashlib.sha256(str(seed).encode()).digest()
    return {
        "config.json": b'{"model_type": "tiny", "seed": %d}' % seed,
        "model.safetensors": (rnd * 8192)[:200_000],
        "sub/notes.txt": b"nested file\n",
    }


@pytest.fixture(scope="session")
def hub():
    """The Hub stand-in, in 401-on-credentials mode, serving two tiny repos."""
    server = HubStandIn([HubRepo("org/tiny", tiny_files(1)), HubRepo("org/other", tiny_files(2))])
    server.start()
    yield server
    server.stop()


def download(hub: HubStandIn, cache: Path, repo_id: str) -> Path:
    """A real huggingface_hub download (clean credentials) into `cache`."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, cache_dir=cache, token=False, endpoint=hub.endpoint))


def hf_cache_verify(hub: HubStandIn, cache: Path, repo_id: str) -> subprocess.CompletedProcess[str]:
    """huggingface_hub's own judge, `hf cache verify`: every cached file's checksum against the
    Hub's listing of the revision, no file missing, none extra."""
    hf = Path(sys.executable).parent / "hf"
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
    return subprocess.run([str(hf), "cache", "verify", repo_id, "--cache-dir", str(cache),
                           "--fail-on-missing-files", "--fail-on-extra-files"],
                          capture_output=True, text=True, env=env)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (tests/sshd.py); skips where openssh-server is missing."""
    from sshd import SSHD, SSHServer

    if not Path(SSHD).exists():
        pytest.skip(f"{MISSING_COMPONENT} (.ci/run)")  # only the tests that use this fixture
    server = SSHServer(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def install_into(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pip install --no-deps --target`, or uv's where this Python has no pip (a uv venv)."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        argv = [sys.executable, "-m", "pip", "install", "-q"]
    else:
        from edgetam_provision.fleet.push import find_uv

        argv = [find_uv() or "uv", "pip", "install", "-q", "--python", sys.executable]
    return subprocess.run([*argv, "--no-deps", "--target", str(target), *args], capture_output=True,
                          text=True)


@pytest.fixture(scope="session")
def hub036_site(tmp_path_factory) -> Path:
    """A folder holding huggingface_hub 0.36 (requests-based, reads ~/.netrc), from the wheels
    .ci/run downloaded (no index needed then), else from the package index."""
    site = tmp_path_factory.mktemp("hub036")
    source = ["--no-index", "--find-links", str(WHEELS)] if WHEELS.is_dir() else []
    proc = install_into(site, *source, *HUB036)
    if proc.returncode != 0:
        pytest.skip(f"{MISSING_WHEELS} (.ci/run): {proc.stderr[-200:]}")
    return site


@pytest.fixture(scope="session")
def source_cache(hub, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("source-cache")
    download(hub, cache, "org/tiny")
    download(hub, cache, "org/other")
    return cache


@pytest.fixture
def cache(source_cache, tmp_path) -> Path:
    """A private copy of a cache populated by huggingface_hub."""
    dest = tmp_path / "cache"
    shutil.copytree(source_cache, dest, symlinks=True)
    return dest


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str | os.PathLike[str]) -> Result:
    """Invoke `provision` in-process; returns exit code, stdout, stderr."""
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return Result(res.exit_code, res.stdout, res.stderr)


def interruptible(args: list[str], **kw) -> subprocess.Popen[str]:
    """`Popen` of a child that a test stops with Ctrl-C (SIGINT): its SIGINT at the default even
    where this process ignores it, as pytest does when a non-interactive shell started it in the
    background (``cmd &``), and a child would inherit that and run to its end. A Python handler is
    reset to the default at exec, and Python then installs its own."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    finally:
        signal.signal(signal.SIGINT, previous)


def run_cli_process(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
                    **kw) -> subprocess.CompletedProcess[str]:
    """Run `provision` as a separate process, like a user would."""
    return subprocess.run([sys.executable, "-m", "edgetam_provision", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def tree_state(root: Path) -> dict[str, tuple]:
    """Everything under `root`: type, link target, mode and content hash of each entry."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode)
            else:
                out[rel] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out





def pytest_collection_modifyitems(config, items):
    """Markers true by construction: `ssh` on exactly the tests that use an sshd fixture, `slow` on
    those that use a model fixture (and, marked by hand, those that run verify themselves)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if SSH_FIXTURES & used:
            item.add_marker(pytest.mark.ssh)
        if MODEL_FIXTURES & used:
            item.add_marker(pytest.mark.slow)


def _missing(session_or_reporter) -> list:
    stats = session_or_reporter.stats if hasattr(session_or_reporter, "stats") else {}
    return [r for r in stats.get("skipped", []) if any(m in str(r.longrepr) for m in MISSING)]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One loud line when tests were skipped for a missing system component, naming the fix."""
    missing = _missing(terminalreporter)
    if missing:
        terminalreporter.write_line(
            f"WARNING: {len(missing)} tests did not run: {', '.join(MISSING)} "
            "(apt-get install openssh-server; run .ci/run, which installs the rest)", red=True,
            bold=True)


def pytest_sessionfinish(session, exitstatus):
    """Under PROVISION_REQUIRE_ALL=1 (.ci/run) a test skipped for a missing component fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("PROVISION_REQUIRE_ALL") and reporter and _missing(reporter) and exitstatus == 0:
        session.exitstatus = 1
