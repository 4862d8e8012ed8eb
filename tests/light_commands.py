"""The light commands on whatever Python runs this (the interpreter matrix, `make matrix`): backup,
check, restore, status, doctor and serve, judged by huggingface_hub loading the restored revision
offline. Needs the package and its light dependencies only (no torch). Exit 0: all held.

Usage: python tests/light_commands.py WORKDIR
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path


def provision(*args: object, check: int | tuple[int, ...] = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "edgetam_provision", *map(str, args)], capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    codes = (check,) if isinstance(check, int) else check
    assert res.returncode in codes, f"provision {args}: exit {res.returncode}\n{res.stderr}"
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    return res


def main(work: Path) -> None:
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    from edgetam_provision.verify.synthetic import install_into_cache

    files = {"config.json": b'{"model_type": "tiny"}', "model.safetensors": os.urandom(300_000),
             "sub/notes.txt": b"nested\n"}
    src, dst, backups = work / "src", work / "dst", work / "backups"
    commit = install_into_cache(src, "org/tiny", files)
    provision("backup", "org/tiny", "--cache-dir", src, "--out", backups)
    provision("check", backups)
    provision("restore", backups, "--cache-dir", dst)
    path = snapshot_download("org/tiny", cache_dir=dst, local_files_only=True)
    assert Path(path, "sub/notes.txt").read_bytes() == b"nested\n"
    assert try_to_load_from_cache("org/tiny", "model.safetensors", cache_dir=dst, revision=commit)
    status = json.loads(provision("status", "--cache-dir", dst, "--backups", backups, "--json").stdout)
    assert status["ok"] is True
    # 16: HF_HUB_OFFLINE (set above) blocks downloads; 8: torch and friends are not installed here
    provision("doctor", "--cache-dir", dst, check=(0, 8, 16))

    evil = work / "evil" / "x.tar"  # the hostile reader, with or without tarfile's data filter
    evil.parent.mkdir()
    with tarfile.open(evil, "w") as tar:
        ti = tarfile.TarInfo("models--org--tiny/blobs/../../../escape")
        ti.size = 4
        tar.addfile(ti, io.BytesIO(b"evil"))
    provision("restore", evil, "--cache-dir", dst, check=3)
    assert not (work / "escape").exists()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "edgetam_provision", "serve", "--cache-dir", dst,
                               "--repo", "org/tiny", "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/org/tiny/resolve/main/config.json"
        for _ in range(100):
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    assert r.read() == files["config.json"]
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("serve did not answer")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0, server.stderr.read() if server.stderr else ""
    print(f"light commands OK on Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
