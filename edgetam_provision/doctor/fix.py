"""`provision doctor --fix`: put aside exactly the credentials the Hub rejects, with a way back.

Only what the online probe proved rejected (401/403) while anonymous access works is touched:
never a working token, never offline, never against an endpoint that refuses anonymous requests
(a private repo or mirror, which this cannot judge). Each changed file gets a backup beside it,
and `undo` gives back what the fix took without losing what changed since (`doctor.edits`).

- token file (``HF_TOKEN_PATH`` / ``$HF_HOME/token``): moved aside;
- stored tokens (``$HF_HOME/stored_tokens``): the rejected named tokens' sections commented out,
  the others kept;
- ``~/.netrc``: the entry for the endpoint's host commented out, every other byte kept;
- ``HF_TOKEN`` / ``HUGGING_FACE_HUB_TOKEN`` in the environment: a process cannot unset its
  parent's variable, so this cannot be fixed from here: the shell start-up files that export it
  are named (file:line) with the line to run now; with ``fix_shell`` those lines are commented out too.

Afterwards the probe runs again as a plain download would (huggingface_hub's own token lookup):
once as it will be after the ``unset`` (if that still fails, every change is reverted), and as it
is in the user's shell now -- while that shell still sends a rejected variable, the verdict says
so and is not a success.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import CacheError, DownloadBlocked, UsageError
from .credentials import Source, endpoint, netrc_login, netrc_path, probe, read_text, sources
from .edits import Change, Undone, comment_out, move_aside
from .edits import undo as undo_changes

SHELL_FILES = (".zshrc", ".zprofile", ".zshenv", ".bashrc", ".bash_profile", ".profile",
               ".config/fish/config.fish")
REJECTED = (401, 403)


def fix(repo: str, confirm: Callable[[list[str]], bool], fix_shell: bool = False,
        progress: Callable[[str], None] = lambda _: None) -> FixReport:
    """Probe, plan, confirm, change (with backups), probe again; revert if it did not help."""
    url = f"{endpoint()}/api/models/{repo}/revision/main"
    anon = probe(url, None)
    if anon != 200:
        raise UsageError(f"cannot judge the credentials: anonymous GET {url} answers {anon or 'nothing'}",
                         "the fix acts only where anonymous access works (online, a public repo to "
                         "probe); nothing was changed")
    found = sources()
    rejected = [s for s in found if probe(url, s.auth) in REJECTED]
    shell = _shell_lines([s.where for s in rejected if s.kind == "env"])
    plan = [_describe(s, fix_shell, shell) for s in rejected]
    report = FixReport(endpoint(), repo, tuple(s.label for s in rejected),
                       tuple(s.label for s in found if s not in rejected),
                       shell_lines=tuple(f"{p}:{n}" for p, n in shell))
    if not rejected:
        return replace(report, message_ok="no credential found here is rejected: nothing to fix")
    if not confirm(plan):
        return replace(report, declined=True)
    changes: list[Change] = []
    try:
        for path, (kind, lines, whats) in _file_edits(rejected, fix_shell, shell).items():
            changes.append(comment_out(path, lines, kind, "; ".join(whats)))
        changes += [move_aside(Path(s.where), s.kind, f"moved {s.where} aside")
                    for s in rejected if s.kind == "token-file"]
    except OSError as exc:
        undo_changes([Path(c.backup) for c in changes])
        what = getattr(exc, "filename", "") or "a file"
        raise CacheError(f"could not change {what}: {exc.strerror or exc}",
                         "nothing was changed (what was done is reverted); fix the permissions and "
                         "run again") from None
    in_env = [s.where for s in rejected if s.kind == "env"]
    unset = tuple(f"unset {var}" for var in in_env)
    after = _probe_as_plain_download(url, in_env)
    if after != 200:
        undo_changes([Path(c.backup) for c in changes])
        raise UsageError(f"after the changes a plain download still gets {after or 'no answer'}: every "
                         "change was reverted", "the online check of doctor shows what is still sent")
    now = _probe_as_plain_download(url, []) if in_env else after
    report = replace(report, changes=tuple(changes), unset=unset, after=after, now=now)
    if now != 200:  # what is true in the user's shell: it still sends the variable
        raise DownloadBlocked(
            f"in this shell a plain download still gets {now or 'no answer'}: it sends "
            f"${' and $'.join(in_env)}, which the endpoint rejects, and no program can unset a variable "
            "of the shell that started it", f"run `{'; '.join(unset)}` in your shell: downloads "
            f"from it then get {after} (checked here without the variable)", result=report)
    return report


@dataclass(frozen=True)
class FixReport:
    """What a fix found and did: the credentials rejected and kept, the changes (each with its
    backup), the ``unset`` lines the user's shell still needs, and the probes after the changes
    as a plain download (``after``: without the rejected variables; ``now``: in this shell)."""

    endpoint: str
    repo: str
    rejected: tuple[str, ...]
    kept: tuple[str, ...]
    changes: tuple[Change, ...] = ()
    unset: tuple[str, ...] = ()
    shell_lines: tuple[str, ...] = ()  # file:line of the shell start-up files exporting a rejected token
    message_ok: str = ""  # nothing to fix, and why
    declined: bool = False  # the user said no: nothing was changed
    after: int | None = None
    now: int | None = None

    @property
    def backups(self) -> list[str]:
        return [c.backup for c in self.changes]

    def to_dict(self) -> dict[str, object]:
        """The object of ``doctor --fix --json``."""
        data: dict[str, object] = {
            "endpoint": self.endpoint, "repo": self.repo, "rejected": list(self.rejected),
            "kept": list(self.kept), "changes": [c.to_dict() for c in self.changes], "backups": self.backups,
            "unset": list(self.unset), "shell_lines": list(self.shell_lines)}
        if self.message_ok:
            data["message_ok"] = self.message_ok
        if self.declined:
            data["declined"] = True
        if self.after is not None:
            data.update(after=self.after, now=self.now)
        return data


@dataclass(frozen=True)
class UndoReport:
    """What ``--undo`` put back, file by file."""

    restored: tuple[Undone, ...]

    def to_dict(self) -> dict[str, object]:
        return {"restored": [u.to_dict() for u in self.restored]}


def undo(backups: list[Path]) -> UndoReport:
    """Give back what the fix took, keeping what changed since (see `doctor.edits`)."""
    return UndoReport(tuple(undo_changes(backups)))


# ---------------------------------------------------------------------------- the changes

def _describe(s: Source, fix_shell: bool, shell: list[tuple[str, int]]) -> str:
    if s.kind == "env":
        where = ", ".join(f"{p}:{n}" for p, n in shell) or "no shell start-up file here"
        lines = "; its export lines are commented out" if fix_shell and shell else ""
        return (f"{s.label} is rejected: a variable of your shell cannot be unset from here: you run "
                f"`unset {s.where}`{lines} (set in {where})")
    verb = {"token-file": "move it aside", "stored-token": f"comment out the stored token {s.name!r}",
            "netrc": f"comment out the entry for {s.name}"}[s.kind]
    return f"{s.label} is rejected: {verb}"


def _file_edits(rejected: list[Source], fix_shell: bool,
                shell: list[tuple[str, int]]) -> dict[Path, tuple[str, set[int], list[str]]]:
    """file -> (kind, the lines to comment out, what for): one edit per file, however many sources."""
    edits: dict[Path, tuple[str, set[int], list[str]]] = {}

    def add(path: Path, kind: str, lines: set[int], what: str) -> None:
        if lines:
            edits.setdefault(path, (kind, set(), []))[1].update(lines)
            edits[path][2].append(what)

    for s in rejected:
        path = Path(s.where)
        if s.kind == "stored-token":
            add(path, "file", _stored_lines(path, s.name), f"commented out stored token {s.name!r} in {path}")
        elif s.kind == "netrc":
            add(path, "file", _netrc_lines(path, s.name), f"commented out {s.name} in {path}")
        elif s.kind == "env" and fix_shell:
            for p in sorted({p for p, _ in shell}):
                add(Path(p), "file", _export_lines(Path(p), s.where), f"commented out {s.where} in {p}")
    return edits


# ---------------------------------------------------------------------------- the files

def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset)


def _stored_lines(path: Path, name: str) -> set[int]:
    """The lines of the stored token `name`'s section: its header up to the next section's."""
    lines, ours = set(), False
    for i, line in enumerate(read_text(path).split("\n")):
        header = re.match(r"\[(?P<name>.+)\]", line.strip())  # as configparser reads a section header
        ours = header.group("name") == name if header else ours
        if ours:
            lines.add(i)
    return lines


def _netrc_lines(path: Path, host: str) -> set[int]:
    """The lines of `host`'s entry. An entry that shares a line with another, or a file with
    macros, is not edited (a clear error)."""
    text = read_text(path)
    tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    words = [w for *_, w in tokens]
    if "macdef" in words:
        raise UsageError(f"{path} defines macros; its {host} entry was not edited",
                         f"comment out the 'machine {host}' entry by hand")
    starts = [i for i, w in enumerate(words) if w in ("machine", "default")] + [len(tokens)]
    for first, after in itertools.pairwise(starts):
        ours = (words[first] == "default" if host == "default"
                else words[first] == "machine" and first + 1 < len(words) and words[first + 1] == host)
        if not ours:
            continue
        begin, last_end = tokens[first][0], tokens[after - 1][1]
        line_start = text.rfind("\n", 0, begin) + 1
        line_end = text.find("\n", last_end)
        line_end = len(text) if line_end < 0 else line_end
        shares = text[line_start:begin].strip() or (after < len(tokens) and tokens[after][0] < line_end)
        if shares:
            raise UsageError(f"{path}: the {host} entry shares a line with another; not edited",
                             f"comment out the 'machine {host}' entry by hand")
        return set(range(_line_of(text, line_start), _line_of(text, line_end) + 1))
    return set()


EXPORT_RE = r"^\s*(?:export\s+|set\s+(?:-\w+\s+)*)?{var}\b\s*=?"


def _export_lines(path: Path, var: str) -> set[int]:
    pattern = re.compile(EXPORT_RE.format(var=re.escape(var)))
    return {i for i, line in enumerate(read_text(path).split("\n")) if pattern.match(line)}


def _shell_lines(variables: list[str]) -> list[tuple[str, int]]:
    """(file, line number) of every line of the shell start-up files that sets one of them."""
    found = []
    for rel in SHELL_FILES:
        path = Path.home() / rel
        lines = set().union(*(_export_lines(path, v) for v in variables))
        found += [(str(path), n + 1) for n in sorted(lines)]
    return found


def _probe_as_plain_download(url: str, unset: list[str]) -> int:
    """What a plain download now gets: huggingface_hub's own token lookup (in a fresh process,
    the variables the user is told to unset left out), and the netrc entry a requests-based
    client would send."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    code = "from huggingface_hub import get_token; print(get_token() or '')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    token = proc.stdout.strip() if proc.returncode == 0 else ""
    status = probe(url, f"Bearer {token}" if token else None)
    entry = netrc_login(netrc_path(), urlsplit(endpoint()).hostname or "")
    if status == 200 and entry:
        status = probe(url, "Basic " + b64encode(f"{entry[0]}:{entry[1]}".encode()).decode())
    return status
