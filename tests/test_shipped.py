"""What runs on the fetch host: the package `remote/`, held to the contract its __init__ states
(Python 3.8+, the standard library and huggingface_hub only, relative imports among its modules),
shipped as a zip that the fixed bootstrap runs."""

from __future__ import annotations

import ast
import glob
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from edgetam_provision import remote
from edgetam_provision.fetch.request import remote_command
from edgetam_provision.fetch.shipped import BOOT, PACKAGE, SOURCE, agent_bundle, shipment

MODULES = sorted(SOURCE.glob("*.py"))
OLDEST = f"~/.pyenv/versions/{remote.PYTHON_MIN[0]}.{remote.PYTHON_MIN[1]}.*/bin/python3"


def _imports(tree: ast.Module) -> list[tuple[str, int, str, bool]]:
    """(module, level, first imported name, at the top of the module) of every import in `tree`."""
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0, "", id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level, node.names[0].name, id(node) in top))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_every_module_of_remote_keeps_the_contract_its_init_states(path):
    source = path.read_text()
    tree = ast.parse(source, feature_version=remote.PYTHON_MIN)  # no syntax newer than the oldest host's
    siblings = {p.stem for p in MODULES}
    for module, level, name, at_top in _imports(tree):
        if level:  # within remote/ only: `from .layout import X`, never `from ..hub import X`
            assert level == 1 and (module or name) in siblings and at_top, f"{path.name} imports .{module}"
            continue
        first = module.split(".")[0]
        if first in remote.HOST_LIBRARIES:
            continue
        # the standard library, at the top: the run under the oldest Python below imports all of it
        assert first in sys.stdlib_module_names and at_top, f"{path.name} imports {module}"
    assert "suppress(ImportError)" not in source


def test_the_bundle_is_every_module_of_remote_and_the_same_bytes_each_time():
    bundle = agent_bundle()
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        assert zf.namelist() == [f"{PACKAGE}/{p.name}" for p in MODULES]
        assert {i.date_time for i in zf.infolist()} == {(2025, 1, 1, 0, 0, 0)}
        assert all(zf.read(f"{PACKAGE}/{p.name}") == p.read_bytes() for p in MODULES)
    agent_bundle.cache_clear()
    assert agent_bundle() == bundle
    assert shipment() == b"%d\n" % len(bundle) + bundle


def test_the_hostile_archive_reader_never_travels():
    with zipfile.ZipFile(io.BytesIO(agent_bundle())) as zf:
        text = b"".join(zf.read(n) for n in zf.namelist()).decode()
    assert "def scan_archive" not in text and "class ArchiveReader" not in text


def test_the_remote_command_is_fixed_words_a_login_shell_leaves_alone():
    command = remote_command("/usr/bin/python3")
    assert command == f'/usr/bin/python3 -u -c "{BOOT}"'
    assert not set(BOOT) & set('"$`\\!\n')


def _oldest_python() -> str:
    found = sorted(glob.glob(os.path.expanduser(OLDEST)))
    if not found:
        pytest.skip(f"needs the oldest host's Python ({OLDEST})")
    return found[0]


def _boot(python: str, tmp_path: Path, params: dict) -> subprocess.CompletedProcess:
    """The bootstrap as the host runs it, fed the shipment and `params`; without user site-packages
    (no huggingface_hub) and with its temporary folders under `tmp_path`."""
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    stdin = shipment() + json.dumps(params).encode() + b"\n"
    argv = [python, "-s", "-u", "-c", BOOT]
    # stdin stays open until the agent is done, as the client keeps it: a closed stdin means the
    # client is gone, and the agent stops at once, whatever it was about to say
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path, env=env)
    assert proc.stdin and proc.stdout and proc.stderr
    deadline = threading.Timer(60, proc.kill)
    deadline.start()
    try:
        proc.stdin.write(stdin)
        proc.stdin.flush()
        out = proc.stdout.read()  # to its end: the agent has said all and exited
        err = proc.stderr.read()
        proc.stdin.close()
        code = proc.wait()
    finally:
        deadline.cancel()
    return subprocess.CompletedProcess(argv, code, out, err)


def test_the_shipped_agent_runs_on_the_oldest_python_and_leaves_no_temporary_folder(tmp_path):
    """Under the oldest Python, the whole package imports from the zip, the agent cleans its
    environment and says, as its one event, what the host lacks; its private folder is gone after."""
    res = _boot(_oldest_python(), tmp_path, {"repos": [{"repo_id": "org/tiny"}]})
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.returncode == 0, res.stderr.decode()
    assert [(e["event"], e["kind"]) for e in events] == [("error", "missing-hub")]
    assert not list(tmp_path.glob("provision-agent-*"))


def test_an_older_python_says_what_it_lacks_and_leaves_no_temporary_folder(tmp_path):
    older = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.[67].*/bin/python3")))
    if not older:
        pytest.skip("needs a Python older than 3.8 (pyenv)")
    res = _boot(older[-1], tmp_path, {})
    assert res.returncode == 1 and res.stdout == b""
    assert b"the provision agent needs Python 3.8 or newer; this is 3." in res.stderr
    assert not list(tmp_path.glob("provision-agent-*"))
