"""The fetch agent on the host Pythons users have: macOS's system Python (3.9), older Linux ones
(3.8), Debian 12's 3.11.2 — each without huggingface_hub, so `--bootstrap` installs the newest
release that supports it into the agent's temporary folder. Judged by `provision check` and a
restore that huggingface_hub loads offline."""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

HOST_PYTHONS = {"3.8": "~/.pyenv/versions/3.8.*/bin/python3", "3.9": "~/.pyenv/versions/3.9.*/bin/python3",
                "3.11.2": "/usr/bin/python3"}


def host_python(version: str) -> str | None:
    for path in sorted(glob.glob(str(Path(HOST_PYTHONS[version]).expanduser()))):
        out = subprocess.run([path, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().startswith(version):
            return path
    return None


@pytest.mark.slow
@pytest.mark.parametrize("version", sorted(HOST_PYTHONS))
def test_the_agent_runs_on_the_host_pythons_users_have(version, hub, tmp_path):
    python = host_python(version)
    if python is None:
        pytest.skip(f"Python {version} is not on this machine")
    res = run_cli("fetch", "--local", "--remote-python", python, "--bootstrap", "--endpoint", hub.endpoint,
                  "--repo", "org/tiny", "--out", tmp_path / "b", "--timeout", "120")
    assert res.exit_code == 0, res.stderr
    assert f"Python {version}" in res.stderr  # the agent said hello from that interpreter
    assert "installing huggingface_hub for Python" in res.stderr  # --bootstrap says what it does
    assert run_cli("check", tmp_path / "b").exit_code == 0
    assert run_cli("restore", tmp_path / "b", "--cache-dir", tmp_path / "c").exit_code == 0
