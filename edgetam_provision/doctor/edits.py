"""The changes `doctor --fix` makes to files, and `--undo`: nothing the user wrote is ever lost.

A change is one of two things: lines of a file commented out (a netrc entry, a stored token's
section, a shell export), or a token file moved aside. Each keeps the original beside it as a
backup (``NAME.provision-backup-<time>-<pid>-<what>``, the original bytes and mode) whose name
says what was done (``lines3-5,9``, ``moved``), so undo knows exactly what --fix wrote and can
tell what changed since:

- the file as --fix left it: the backup is put back, byte for byte;
- changed since (a line added, `hf auth login` writing a new token): what changed is kept (a
  copy of the file as found is saved as ``NAME.provision-before-undo-<time>``) and the lines
  --fix commented out are given back where they still stand as it left them (a merge); a token
  file written since is kept. Whatever could not be given back stays in the backup, renamed
  ``NAME.provision-before-fix-<time>`` (undo does not take it again); the result says which;
- the backup gone (undone already): nothing to undo, said so.

A symlink (a dotfiles ``~/.netrc``) is edited at its target and stays a link. Every write is a
temp file + rename keeping the file's mode; a change that cannot be written leaves no backup.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CacheError, UsageError
from ..fsutil import write_atomic

BACKUP_TAG = ".provision-backup-"
BEFORE_UNDO_TAG = ".provision-before-undo-"
BEFORE_FIX_TAG = ".provision-before-fix-"
MAX_CELLS = 4_000_000  # lines changed since the fix x lines of the file, for the exact merge
BACKUP_RE = re.compile(
    rf"(?P<original>.+){re.escape(BACKUP_TAG)}\d{{8}}-\d{{6}}-\d+(?:-(?P<what>moved|lines[\d,-]*))?")


@dataclass(frozen=True)
class Change:
    kind: str
    path: str
    backup: str
    what: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Undone:
    path: str
    backup: str
    outcome: str  # put back | merged | kept newer | nothing to undo
    note: str = ""
    saved: str = ""  # where the content found at undo time was kept

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _stamp() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _spans(lines: set[int]) -> str:
    """{2, 3, 4, 8} -> 'lines3-5,9' (1-based ranges)."""
    out, ordered = [], sorted(lines)
    while ordered:
        first = last = ordered.pop(0)
        while ordered and ordered[0] == last + 1:
            last = ordered.pop(0)
        out.append(f"{first + 1}" if first == last else f"{first + 1}-{last + 1}")
    return "lines" + ",".join(out)


def _parse_spans(what: str) -> set[int]:
    lines: set[int] = set()
    for part in filter(None, what.removeprefix("lines").split(",")):
        first, _, last = part.partition("-")
        lines.update(range(int(first) - 1, int(last or first)))
    return lines


def comment_lines(text: str, lines: set[int]) -> str:
    """`text` with the given lines (0-based, split at "\\n" only) commented out ("# "), every other
    byte kept."""
    return "\n".join(f"# {ln}" if i in lines and ln.strip() else ln for i, ln in enumerate(text.split("\n")))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def comment_out(path: Path, lines: set[int], kind: str, what: str) -> Change:
    """Comment out `lines` of `path` (at its target if a link), the original kept as the backup."""
    real = path.resolve()
    original = real.read_bytes()
    backup = real.with_name(f"{real.name}{BACKUP_TAG}{_stamp()}-{_spans(lines)}")
    mode = _mode(real)
    write_atomic(backup, original, mode=mode)
    try:
        write_atomic(real, _bytes(comment_lines(_text(original), lines)), mode=mode)
    except BaseException:
        backup.unlink(missing_ok=True)
        raise
    at = f" (at its target {real})" if real != path else ""
    return Change(kind, str(path), str(backup), f"{what}{at}")


def move_aside(path: Path, kind: str, what: str) -> Change:
    backup = path.with_name(f"{path.name}{BACKUP_TAG}{_stamp()}-moved")
    os.replace(path, backup)
    return Change(kind, str(path), str(backup), what)


@dataclass(frozen=True)
class Merge:
    text: str
    back: int  # lines --fix commented out, given back
    left: int  # lines --fix commented out that changed since: left as they are
    added: int  # lines added since the fix
    removed: int  # lines removed or changed since the fix

    def words(self) -> str:
        return (f"changed since the fix ({self.added} lines added, {self.removed} removed or changed): kept; "
                f"{self.back} lines it commented out are back"
                + (f", {self.left} it commented out changed since: left as they are" if self.left else ""))


def common_lines(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of `a` and `b`: the common start and end, then
    an exact LCS of the middle (small for the files doctor edits; past MAX_CELLS, nothing of the
    middle is matched, so a merge gives back less and keeps the rest in the backup)."""
    pre = 0
    while pre < min(len(a), len(b)) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < min(len(a), len(b)) - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    ma, mb = a[pre:len(a) - suf], b[pre:len(b) - suf]
    pairs = [(i, i) for i in range(pre)]
    if ma and mb and len(ma) * len(mb) <= MAX_CELLS:
        longest = [[0] * (len(mb) + 1) for _ in range(len(ma) + 1)]  # LCS length of ma[i:], mb[j:]
        for i in reversed(range(len(ma))):
            for j in reversed(range(len(mb))):
                longest[i][j] = (longest[i + 1][j + 1] + 1 if ma[i] == mb[j]
                                 else max(longest[i + 1][j], longest[i][j + 1]))
        i = j = 0
        while i < len(ma) and j < len(mb):
            if ma[i] == mb[j]:
                pairs.append((pre + i, pre + j))
                i, j = i + 1, j + 1
            elif longest[i + 1][j] >= longest[i][j + 1]:
                i += 1
            else:
                j += 1
    return pairs + [(len(a) - suf + k, len(b) - suf + k) for k in range(suf)]


def merge(original: str, fixed: str, now: str) -> Merge:
    """`now` with each line --fix commented out given back its original text where it still stands as
    --fix left it; every other line of `now` kept."""
    old, ours, theirs = (t.split("\n") for t in (original, fixed, now))
    out, back = list(theirs), 0
    pairs = common_lines(ours, theirs)
    for i, j in pairs:
        if ours[i] != old[i]:
            out[j], back = old[i], back + 1
    left = sum(a != b for a, b in zip(old, ours, strict=True)) - back
    return Merge("\n".join(out), back, left, len(theirs) - len(pairs), len(ours) - len(pairs))


def _save_current(path: Path, data: bytes) -> Path:
    saved = path.with_name(f"{path.name}{BEFORE_UNDO_TAG}{_stamp()}")
    write_atomic(saved, data, mode=_mode(path))
    return saved


def _keep_before_fix(backup: Path, path: Path) -> Path:
    """The backup, kept under a name undo does not take again (what it holds was not all given back)."""
    kept = path.with_name(f"{path.name}{BEFORE_FIX_TAG}{_stamp()}")
    os.replace(backup, kept)
    return kept


def undo_one(backup: Path) -> Undone:
    """Give back what one --fix change took (see the module's rules)."""
    m = BACKUP_RE.fullmatch(backup.name)
    if m is None:
        raise UsageError(f"{backup} is not a backup that doctor's fix made",
                         f"pass the files named in its output (…{BACKUP_TAG}…)")
    path, what = backup.with_name(m["original"]), m["what"] or ""
    if not os.path.lexists(backup):
        return Undone(str(path), str(backup), "nothing to undo",
                      "its backup is not there: an earlier undo put it back, or it was removed")
    if not os.path.lexists(path):  # moved aside by the fix, or removed since: the backup takes its place
        os.replace(backup, path)
        return Undone(str(path), str(backup), "put back", "" if what == "moved" else "it had been removed")
    old, now = backup.read_bytes(), path.read_bytes()
    if now == old:
        backup.unlink()
        return Undone(str(path), str(backup), "put back", "it already was as before the fix")
    if what == "moved":  # a token written since (a new login): it stays; the rejected one is kept aside
        kept = _keep_before_fix(backup, path)
        return Undone(str(path), str(backup), "kept newer",
                      f"written since the fix (a new login?): kept; the one the fix moved aside is in {kept}")
    fixed = comment_lines(_text(old), _parse_spans(what)) if what else None
    if fixed is not None and now == _bytes(fixed):
        os.replace(backup, path)
        return Undone(str(path), str(backup), "put back")
    if fixed is None:  # a backup without the record of what was done: it wins, the newer is saved
        saved = str(_save_current(path, now))
        os.replace(backup, path)
        return Undone(str(path), str(backup), "put back", f"the file as it was is saved in {saved}", saved)
    merged, saved = merge(_text(old), fixed, _text(now)), ""
    note = merged.words()
    if merged.back:
        saved = str(_save_current(path, now))
        write_atomic(path, _bytes(merged.text), mode=_mode(path))
        note += f"; the file as it was is saved in {saved}"
    if merged.left:
        note += f"; the file as it was before the fix is kept in {_keep_before_fix(backup, path)}"
    else:
        backup.unlink()
    return Undone(str(path), str(backup), "merged", note, saved)


def undo(backups: list[Path]) -> list[Undone]:
    """Undo each change; a write that fails part-way says what was undone before it."""
    done: list[Undone] = []
    for backup in backups:
        try:
            done.append(undo_one(backup))
        except OSError as exc:
            finished = ", ".join(d.path for d in done) or "nothing"
            raise CacheError(f"could not undo {backup}: {exc.strerror or exc} (undone before it: {finished})",
                             "that backup is still there; fix the permissions and undo again") from None
    return done
