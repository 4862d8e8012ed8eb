"""Free space, asked before the first byte is written: one check for fetch, restore and doctor.

A folder that does not exist yet is measured where it will be made (its nearest existing parent);
a check leaves a `reserve` free. The words are the library's: "choose another cache folder" (or
output folder), which the CLI turns into its option (`cli.hints`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..console import human_size
from ..errors import CacheError


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest of its parents that exists (where `path` would be made)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path(path.anchor or "/"))


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on `path`'s filesystem."""
    return shutil.disk_usage(nearest_existing(path)).free


def ensure_space(folder: Path, needed: int, what: str, *, folder_words: str = "output folder",
                 kept: str = "nothing was written", reserve: int = 0) -> None:
    """Refuse (CacheError) when `needed` more bytes, and `reserve` beside them, would not fit in
    `folder`. `what` names what needs them; `folder_words` what the user may choose instead
    ("cache folder", "output folder"); `kept` what stays as it was."""
    free = free_bytes(folder)
    if needed + reserve > free:
        raise CacheError(f"{what} needs {human_size(needed)} more in {folder}, which has {human_size(free)} "
                         "free", f"free some disk space (or choose another {folder_words}), then run it "
                         f"again; {kept}", path=folder)
