"""The command line as a whole: documented commands, --json everywhere, the exit-code table."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO_ROOT, run_cli

from edgetam_provision.cli import cli
from edgetam_provision.errors import EXIT_CODES


def test_every_command_is_documented_with_an_example_and_takes_json():
    assert set(cli.commands) >= {"fetch", "restore", "verify", "backup", "status"}
    for name, cmd in cli.commands.items():
        assert cmd.help and "Example: provision" in cmd.help, name
        assert "as_json" in {p.name for p in cmd.params}, name
        assert "cache_dir" in {p.name for p in cmd.params}, name


def test_readme_exit_code_table_matches_the_error_table():
    readme = (REPO_ROOT / "README.md").read_text()
    table = {int(m) for m in re.findall(r"^\| (\d+) \|", readme, re.M)}
    assert table == set(EXIT_CODES)


def test_help_lists_the_exit_codes():
    res = run_cli("--help")
    assert res.exit_code == 0
    for code in EXIT_CODES:
        assert re.search(rf"^\s+{code}\s", res.stdout, re.M), code


def test_help_does_not_import_torch_or_transformers():
    code = ("import sys; from edgetam_provision.cli import cli;"
            "from click.testing import CliRunner; CliRunner().invoke(cli, ['--help']);"
            "print(sorted(m for m in ('torch', 'transformers', 'paramiko', 'huggingface_hub')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_with_json_give_one_object_on_stdout_and_one_line_on_stderr(tmp_path):
    import json

    res = run_cli("restore", tmp_path / "missing", "--json", "--cache-dir", tmp_path / "c")
    assert res.exit_code == 2
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["error"] == "usage" and data["hint"]
    assert res.stderr.count("error: ") == 1
