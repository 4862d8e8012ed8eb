"""The library says what is true in its own words; only cli/ names the options (issue 27).

A hint names a setting or a next step ("choose another cache folder"); `cli.hints` turns those
words into the option or command that does it ("choose another --cache-dir") wherever the CLI
prints a hint. The library's strings name none of the CLI's options.
"""

from __future__ import annotations

import ast
import errno
import re
from pathlib import Path

import click
import pytest

from edgetam_provision.cli import cli
from edgetam_provision.cli.hints import OPTION_WORDS, with_options
from edgetam_provision.errors import HostMisbehaved
from edgetam_provision.fsutil import disk_error

PACKAGE = Path(__file__).resolve().parent.parent / "edgetam_provision"
FLAG_RE = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

#: rooms still to be brought to the rule (issue 27: other branches own them), with the options they
#: name; the test fails on any option named outside this list, and on a row that is no longer true
PENDING: dict[str, set[str]] = {
    "fetch/client.py": {"--bootstrap", "--debug", "--endpoint", "--include",
                        "--remote-python", "--repo-type", "--token-env"},
    "fetch/openssh.py": {"--timeout", "--transfer"},
    "fetch/pace.py": {"--stall"},
    "fetch/protocol.py": {"--remote-python", "--timeout"},
    "fetch/request.py": {"--endpoint", "--host", "--identity", "--local", "--remote-python"},
    "fetch/run.py": {"--remote-python"},
    "fetch/ssh.py": {"--accept-new-host-key", "--identity", "--ssh-config", "--timeout", "--user"},
    "fleet/peer.py": {"--backups", "--port", "--stall"},  # its own command line, on each host (argparse)
    "fleet/push.py": {"--check", "--forks", "--inventory", "--limit"},  # but --inventory: ansible-playbook's
    "fleet/rows.py": {"--remote-python"},  # push's rows: cli/fleet.py to apply `with_options`
    "hub/cache.py": {"--cache-dir"},
    "remote/agent.py": {"--exclude", "--include"},
    "remote/environment.py": {"--quiet"},  # pip's own option, on the host
    "restore/publish.py": {"--keep-refs"},
    "verify/report.py": {"--no-quality-gate"},
    "verify/run.py": {"--box", "--debug", "--host", "--image", "--repo", "--restore", "--synthetic"},
    "verify/runtime.py": {"--device"},
    "verify/segment.py": {"--host"},
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


def test_the_library_names_no_cli_option_outside_the_rooms_still_pending():
    named = named_options()
    beyond = {rel: flags - PENDING.get(rel, set()) for rel, flags in named.items()}
    assert not {rel: flags for rel, flags in beyond.items() if flags}, "say it in the library's words"
    stale = {rel: flags - named.get(rel, set()) for rel, flags in PENDING.items()}
    assert not {rel: flags for rel, flags in stale.items() if flags}, "no longer named: drop from PENDING"


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
])
def test_a_library_hint_reaches_the_user_with_its_option(error, option):
    assert option in with_options(error.hint)
    assert not FLAG_RE.search(error.hint)
