"""The library says what is true in its own words; only cli/ names the options (issue 27).

A hint names a setting or a next step ("choose another cache folder"); `cli.hints` turns those
words into the option or command that does it ("choose another --cache-dir") wherever the CLI
prints the library's words: an error's message and hint, progress, doctor's findings, push's rows,
verify's note. The library's strings name none of the CLI's options.
"""

from __future__ import annotations

import ast
import errno
import json
import re
from pathlib import Path

import click
import pytest
from conftest import run_cli

from edgetam_provision.cli import cli
from edgetam_provision.cli.hints import OPTION_WORDS, with_options
from edgetam_provision.errors import HostMisbehaved
from edgetam_provision.fetch.client import agent_error
from edgetam_provision.fetch.events import HostError
from edgetam_provision.fsutil import disk_error

PACKAGE = Path(__file__).resolve().parent.parent / "edgetam_provision"
FLAG_RE = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

#: modules whose strings name another program's options that happen to share a name with ours,
#: with those options: the test fails on any other option named below cli/, and on a row here that
#: is no longer true
EXEMPT: dict[str, set[str]] = {
    # the peer's own command line (argparse), run by Ansible on each fleet host, not `provision`
    "fleet/peer.py": {"--backups", "--port", "--stall"},
    # pip's own option, in the pip command the host's agent runs to install huggingface_hub
    "remote/environment.py": {"--quiet"},
}


def cli_options() -> set[str]:
    found: set[str] = set()
    group = cli
    for command in [group, *group.commands.values()]:
        for param in command.params:
            if isinstance(param, click.Option):
                found.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return found


def library_strings(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings (f-strings: their constant parts)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def named_options() -> dict[str, set[str]]:
    options = cli_options()
    named: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("cli/"):
            continue
        flags = {f for s in library_strings(path) for f in FLAG_RE.findall(s)} & options
        if flags:
            named[rel] = flags
    return named


def test_the_library_names_no_cli_option_but_another_programs_own():
    named = named_options()
    beyond = {rel: flags - EXEMPT.get(rel, set()) for rel, flags in named.items()}
    assert not {rel: flags for rel, flags in beyond.items() if flags}, "say it in the library's words"
    stale = {rel: flags - named.get(rel, set()) for rel, flags in EXEMPT.items()}
    assert not {rel: flags for rel, flags in stale.items() if flags}, "no longer named: drop from EXEMPT"


def test_every_row_of_the_table_is_words_the_library_says():
    said = " ".join(s for path in PACKAGE.rglob("*.py") if "cli" not in path.relative_to(PACKAGE).parts
                    for s in library_strings(path))
    said += " " + disk_error(OSError(errno.ENOSPC, "full"), Path("x"), "output folder").hint
    unsaid = [words for words, _cli in OPTION_WORDS if words not in said]
    assert not unsaid


def test_each_row_becomes_a_hint_that_names_an_option_or_a_command():
    for words, cli_words in OPTION_WORDS:
        assert with_options(f"do this: {words}.") == f"do this: {cli_words}."
        assert FLAG_RE.search(cli_words) or "`provision " in cli_words


@pytest.mark.parametrize(("error", "option"), [
    (disk_error(OSError(errno.ENOSPC, "full"), Path("c/blobs/x")), "free some disk space (or choose another "
                                                                    "--cache-dir) and run it again"),
    (disk_error(OSError(errno.EACCES, "denied"), Path("out/x.tar"), "output folder"),
     "check the folder's permissions or choose another --out"),
    (disk_error(OSError(errno.EIO, "io"), Path("x")), "run it again with --debug for the details"),
    (HostMisbehaved("bad event"), "or run it again with --debug and report it"),
    (agent_error(HostError(kind="missing-hub", message="huggingface_hub is not installed"), "h"),
     "choose another --remote-python that has it, or pass --bootstrap to install it into a temporary folder"),
    (agent_error(HostError(kind="no-match", message="no file matches"), "h"), "e.g. --include '*.json'"),
])
def test_a_library_hint_reaches_the_user_with_its_option(error, option):
    assert option in with_options(error.hint)
    assert not FLAG_RE.search(error.hint)


def test_an_error_message_and_its_hint_reach_the_user_with_their_options(monkeypatch, tmp_path):
    res = run_cli("push", "--backups", tmp_path)  # no hosts: the message says how to name them
    assert res.exit_code == 2
    assert "error: name the hosts: provision push HOST... or --inventory FILE" in res.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_cli("fetch", "--local", "--out", tmp_path / "b", "--json")
    assert res.exit_code == 2 and "or fetch with --host HOST" in res.stderr
    assert "fetch with --host HOST" in json.loads(res.stdout)["hint"]  # --json says it as the text does
