"""What travels to the fetch host: the package `remote/` as a zip, and the bootstrap that runs it.

The one command run on the host is ``PYTHON -u -c BOOT``: everything else comes on stdin (sshd runs
commands through the login shell, so only fixed words may stand in the command). BOOT reads a
length line and that many bytes of zip, writes them into a private temporary folder (removed when
the agent ends), puts the zip on ``sys.path`` and calls ``agent.main`` with that folder. The zip
holds every module of `remote/` under the name `PACKAGE`, the same bytes for the same code
(sorted, fixed timestamps), so the host runs exactly the client's own packing and grammar.
"""

from __future__ import annotations

import functools
import io
import zipfile
from pathlib import Path

from .. import remote

SOURCE = Path(remote.__file__).resolve().parent
PACKAGE = "provision_remote"  # the package's name on the host: its own, beside whatever is installed there
ZIP_TIME = (2025, 1, 1, 0, 0, 0)
BOOT = ("import sys,os,atexit,shutil,tempfile as t;b=sys.stdin.buffer;z=b.read(int(b.readline()));"
        "d=t.mkdtemp(prefix='provision-agent-');atexit.register(shutil.rmtree,d,True);"
        "p=os.path.join(d,'agent.zip');f=open(p,'wb');f.write(z);f.close();sys.path.insert(0,p);"
        f"import {PACKAGE}.agent as a;a.main(d)")


@functools.lru_cache(maxsize=1)
def agent_bundle() -> bytes:
    """`remote/`'s modules as a zip, ``PACKAGE/<module>.py``: sorted, dated `ZIP_TIME`, mode 0644."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(SOURCE.glob("*.py")):
            info = zipfile.ZipInfo(f"{PACKAGE}/{path.name}", ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def shipment() -> bytes:
    """What the client writes first on the agent's stdin: the bundle's length, a newline, the bundle."""
    bundle = agent_bundle()
    return b"%d\n" % len(bundle) + bundle
