"""Every write is a temp file and a rename, and the file it leaves has the permissions the user's
umask gives a new file (as huggingface_hub's do), or those of the file it replaced."""

from __future__ import annotations

import os
import stat

from hypothesis import given
from hypothesis import strategies as st

from edgetam_provision.fsutil import TMP_PREFIX, write_atomic

MODES = st.integers(0o400, 0o777).map(lambda m: m | 0o600)  # the owner can still read and write it


@given(umask=st.integers(0, 0o077), before=st.none() | MODES)
def test_a_new_file_gets_what_the_umask_gives_and_a_replaced_one_keeps_its_mode(tmp_path_factory, umask,
                                                                                before):
    folder = tmp_path_factory.mktemp("w")
    path = folder / "refs" / "main"
    if before is not None:
        path.parent.mkdir()
        path.write_text("old")
        path.chmod(before)
    old = os.umask(umask)
    try:
        write_atomic(path, "new")
    finally:
        os.umask(old)
    assert path.read_text() == "new"
    want = (0o666 & ~umask) if before is None else before
    assert stat.S_IMODE(path.stat().st_mode) == want
    assert not [p for p in path.parent.iterdir() if p.name.startswith(TMP_PREFIX)]
