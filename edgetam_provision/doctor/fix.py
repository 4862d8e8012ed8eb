"""`provision doctor --fix`: put aside exactly the credentials the Hub rejects, with a way back.

Only what the online probe proved rejected (401/403) while anonymous access works is touched:
never a working token, never offline, never against an endpoint that refuses anonymous requests
(a private repo or mirror, which this cannot judge). Each changed file gets a backup beside it
(``NAME.provision-backup-<time>``, the original bytes and mode), and `undo` puts the backups back.

- token file (``HF_TOKEN_PATH`` / ``$HF_HOME/token``): moved aside;
- stored tokens (``$HF_HOME/stored_tokens``): the rejected named tokens removed, the others kept;
- ``~/.netrc``: the entry for the endpoint's host commented out, every other byte kept;
- ``HF_TOKEN`` / ``HUGGING_FACE_HUB_TOKEN`` in the environment: a process cannot unset its
  parent's variable, so the shell start-up files that export it are named (file:line) with the
  line to run now; with ``fix_shell`` those lines are commented out too.

Afterwards the probe runs again as a plain download would (huggingface_hub's own token lookup,
the variables named above unset): if it still fails, every change is reverted.
"""

from __future__ import annotations

import configparser
import io
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import CacheError, UsageError
from ..fsutil import write_atomic
from .checks import Source, _netrc_login, _netrc_path, _probe, _read, endpoint, sources

BACKUP_TAG = ".provision-backup-"
SHELL_FILES = (".zshrc", ".zprofile", ".zshenv", ".bashrc", ".bash_profile", ".profile",
               ".config/fish/config.fish")
REJECTED = (401, 403)


@dataclass(frozen=True)
class Change:
    kind: str
    path: str
    backup: str
    what: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def fix(repo: str, confirm: Callable[[list[str]], bool], fix_shell: bool = False,
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Probe, plan, confirm, change (with backups), probe again; revert if it did not help."""
    url = f"{endpoint()}/api/models/{repo}/revision/main"
    anon = _probe(url, None)
    if anon != 200:
        raise UsageError(f"cannot judge the credentials: anonymous GET {url} answers {anon or 'nothing'}",
                         "--fix acts only where anonymous access works (online, a public repo: "
                         "pass one with --repo); nothing was changed")
    found = sources()
    rejected = [s for s in found if _probe(url, s.auth) in REJECTED]
    kept = [s.label for s in found if s not in rejected]
    shell = _shell_lines([s.where for s in rejected if s.kind == "env"])
    plan = [_describe(s, fix_shell, shell) for s in rejected]
    data: dict[str, Any] = {"endpoint": endpoint(), "repo": repo, "rejected": [s.label for s in rejected],
                            "kept": kept, "changes": [], "backups": [], "unset": [],
                            "shell_lines": [f"{p}:{n}" for p, n in shell]}
    if not rejected:
        data["message_ok"] = "no credential found here is rejected: nothing to fix"
        return data
    if not confirm(plan):
        data["declined"] = True
        return data
    changes: list[Change] = []
    try:
        for s in rejected:
            changes += _apply(s, fix_shell, shell)
    except OSError as exc:
        undo([Path(c.backup) for c in changes])
        what = getattr(exc, "filename", "") or "a file"
        raise CacheError(f"could not change {what}: {exc.strerror or exc}",
                         "nothing was changed (what was done is reverted); fix the permissions and "
                         "run again") from None
    data["unset"] = [f"unset {s.where}" for s in rejected if s.kind == "env"]
    after = _probe_as_plain_download(url, [s.where for s in rejected if s.kind == "env"])
    data["after"] = after
    if after != 200:
        undo([Path(c.backup) for c in changes])
        data["reverted"] = True
        raise UsageError(f"after the changes a plain download still gets {after or 'no answer'}: every "
                         "change was reverted", "run `provision doctor --online` to see what is still sent")
    data["changes"] = [c.to_dict() for c in changes]
    data["backups"] = [c.backup for c in changes]
    return data


def undo(backups: list[Path]) -> list[dict[str, str]]:
    """Put each backup back in the place it was taken from (byte for byte, its mode too)."""
    restored = []
    for backup in backups:
        name = backup.name
        if BACKUP_TAG not in name:
            raise UsageError(f"{backup} is not a backup that doctor --fix made",
                             f"pass the files named in its output (…{BACKUP_TAG}…)")
        original = backup.with_name(name[:name.rindex(BACKUP_TAG)])
        os.replace(backup, original)
        restored.append({"backup": str(backup), "restored": str(original)})
    return restored


# ---------------------------------------------------------------------------- the changes

def _describe(s: Source, fix_shell: bool, shell: list[tuple[str, int]]) -> str:
    if s.kind == "env":
        where = ", ".join(f"{p}:{n}" for p, n in shell) or "no shell start-up file here"
        act = "comment out its lines" if fix_shell and shell else "you run `unset " + s.where + "`"
        return f"{s.label} is rejected: {act} (set in {where})"
    verb = {"token-file": "move it aside", "stored-token": f"remove the stored token {s.name!r}",
            "netrc": f"comment out the entry for {s.name}"}[s.kind]
    return f"{s.label} is rejected: {verb}"


def _apply(s: Source, fix_shell: bool, shell: list[tuple[str, int]]) -> list[Change]:
    if s.kind == "token-file":
        path = Path(s.where)
        backup = _backup_name(path)
        os.replace(path, backup)
        return [Change(s.kind, str(path), str(backup), f"moved {path} aside")]
    if s.kind == "stored-token":
        path = Path(s.where)
        return [_rewrite(path, _without_stored(path, s.name), f"removed {s.name!r} from {path}")]
    if s.kind == "netrc":
        path = Path(s.where)
        return [_rewrite(path, _without_netrc_entry(path, s.name), f"commented out {s.name} in {path}")]
    if fix_shell:
        files = sorted({p for p, _ in shell})
        return [_rewrite(Path(p), _without_exports(Path(p), s.where), f"commented out {s.where} in {p}")
                for p in files if s.where in Path(p).read_text()]
    return []


def _backup_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{BACKUP_TAG}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")


def _rewrite(path: Path, text: str, what: str) -> Change:
    """Keep the original as the backup (its bytes and mode), put the new text in its place."""
    backup = _backup_name(path)
    shutil.copy2(path, backup)
    write_atomic(path, text.encode("utf-8", "surrogateescape"), mode=path.stat().st_mode & 0o7777)
    return Change("file", str(path), str(backup), what)


# ---------------------------------------------------------------------------- the files

def _without_stored(path: Path, name: str) -> str:
    parser = configparser.ConfigParser()
    parser.read_string(_read(path))
    parser.remove_section(name)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _without_netrc_entry(path: Path, host: str) -> str:
    """The file with the lines of `host`'s entry commented out and every other byte kept. An entry
    that shares a line with another, or a file with macros, is not edited (a clear error)."""
    text = _read(path)
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
        lines = [f"# {ln}" if ln.strip() else ln for ln in text[line_start:line_end].split("\n")]
        return text[:line_start] + "\n".join(lines) + text[line_end:]
    return text


EXPORT_RE = r"^\s*(?:export\s+|set\s+(?:-\w+\s+)*)?{var}\b\s*=?"


def _shell_lines(variables: list[str]) -> list[tuple[str, int]]:
    """(file, line number) of every line of the shell start-up files that sets one of them."""
    found = []
    for rel in SHELL_FILES:
        path = Path.home() / rel
        for n, line in enumerate(_read(path).splitlines(), 1):
            if any(re.match(EXPORT_RE.format(var=re.escape(v)), line) for v in variables):
                found.append((str(path), n))
    return found


def _without_exports(path: Path, var: str) -> str:
    pattern = re.compile(EXPORT_RE.format(var=re.escape(var)))
    return "".join(f"# {ln}" if pattern.match(ln) else ln for ln in _read(path).splitlines(keepends=True))


def _probe_as_plain_download(url: str, unset: list[str]) -> int:
    """What a plain download now gets: huggingface_hub's own token lookup (in a fresh process,
    the variables the user is told to unset left out), and the netrc entry a requests-based
    client would send."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    code = "from huggingface_hub import get_token; print(get_token() or '')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    token = proc.stdout.strip() if proc.returncode == 0 else ""
    status = _probe(url, f"Bearer {token}" if token else None)
    entry = _netrc_login(_netrc_path(), urlsplit(endpoint()).hostname or "")
    if status == 200 and entry:
        status = _probe(url, "Basic " + b64encode(f"{entry[0]}:{entry[1]}".encode()).decode())
    return status
