"""`make setup` on the user's kind of machine: uv first, else a Python that meets the floor, else one
line naming what to install. Simulated with fake interpreters on PATH (nothing is installed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, install_into


def fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + body)
    (bin_dir / name).chmod(0o755)


def old_python(bin_dir: Path, name: str = "python3") -> None:
    """A Python 3.9.6, as macOS ships: fails the floor check, prints its version when asked."""
    fake(bin_dir, name, 'case "$2" in *version_info*) exit 1;; *) echo 3.9.6;; esac\n')


def make(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/usr/bin/make", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "HOME": str(bin_dir)})


def test_without_uv_or_a_new_enough_python_it_stops_with_one_line_naming_the_fix(tmp_path):
    bin_dir = tmp_path / "bin"
    old_python(bin_dir)
    res = make(bin_dir, "install", f"VENV={tmp_path / 'venv'}")
    assert res.returncode != 0
    assert "Python 3.10 or newer is needed" in res.stderr and "3.9.6" in res.stderr
    assert "brew install python@3.12" in res.stderr and "uv" in res.stderr
    assert not (tmp_path / "venv").exists()


def test_the_newest_python_that_meets_the_floor_is_chosen(tmp_path):
    bin_dir = tmp_path / "bin"
    old_python(bin_dir)
    fake(bin_dir, "python3.12", "exit 0\n")
    res = make(bin_dir, "-n", "install", f"VENV={tmp_path / 'venv'}")
    assert res.returncode == 0, res.stderr
    assert f"{bin_dir / 'python3.12'} -m venv" in res.stdout


def test_with_uv_on_path_setup_uses_uv_sync(tmp_path):
    bin_dir = tmp_path / "bin"
    old_python(bin_dir)
    log = tmp_path / "uv.log"
    fake(bin_dir, "uv", f'echo "$UV_PROJECT_ENVIRONMENT $*" >> {log}\n'
                        '/bin/mkdir -p "$UV_PROJECT_ENVIRONMENT"\n')
    os.symlink("/usr/bin/touch", bin_dir / "touch")
    res = make(bin_dir, "install", f"VENV={tmp_path / 'venv'}")
    assert res.returncode == 0, res.stderr
    assert log.read_text().split() == [str(tmp_path / "venv"), "sync", "--extra", "dev", "--compile-bytecode"]


@pytest.mark.slow
def test_a_built_wheel_installed_elsewhere_verifies_from_any_folder(tmp_path):
    """What pip install ., uv tool install and pipx give: no test_images/ beside the package."""
    import sys

    from edgetam_provision.fleet.push import build_wheel

    wheel = build_wheel(tmp_path / "wheels")  # pip's frontend, or uv's in a venv without pip
    target = tmp_path / "site"
    assert install_into(target, str(wheel)).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import edgetam_provision; print(edgetam_provision.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True,
                           text=True, check=True).stdout
    assert where.startswith(str(target))
    res = subprocess.run([sys.executable, "-m", "edgetam_provision", "verify", "--synthetic", "--device",
                          "cpu", "--runs", "1", "--cache-dir", str(tmp_path / "c"), "--json"],
                         cwd=elsewhere, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert '"passed": true' in res.stdout and "truck.jpg" in res.stdout
