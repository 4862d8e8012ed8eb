"""End to end: `provision fetch --host` vs the user's manual pipeline, same host, same Hub stand-in.

Manual (what the user did by hand): ssh host snapshot_download (clean credentials) -> ssh host tar cf
-> scp -> sha256sum. Ours: one `provision fetch` (download, pack, pull, hash, manifest, validate).
Goal: <= 0.7x the manual time at 1 GiB.

Usage: python benchmarks/bench_fetch.py [SIZE]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, interleave, machine, sh, table
from hub_standin import HubRepo, HubStandIn
from sshd import SSHServer

MANUAL = ("import os,sys; os.environ.pop('HF_TOKEN',None); os.environ.pop('HUGGING_FACE_HUB_TOKEN',None);"
          "os.environ['HF_HUB_DISABLE_IMPLICIT_TOKEN']='1'; os.environ['NETRC']='/dev/null';"
          "from huggingface_hub import snapshot_download;"
          "snapshot_download('org/big', cache_dir=sys.argv[1], token=False)")


def main() -> str:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 30
    files = {"model.safetensors": os.urandom(size), "config.json": b"{}"}
    hub = HubStandIn([HubRepo("org/big", files)], reject_credentials=True).start()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        (root / "sshd").mkdir()
        server = SSHServer(root / "sshd")
        host_dir = root / "host"
        out = root / "out"
        opts = (f"-p {server.port} -i {server.client_key} -o UserKnownHostsFile={server.known_hosts} "
                "-o BatchMode=yes -o IdentitiesOnly=yes")
        scp_opts = opts.replace("-p ", "-P ", 1)
        user = f"{server.user}@127.0.0.1"

        def clean() -> None:
            shutil.rmtree(host_dir, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(server.home / ".cache" / "edgetam-provision", ignore_errors=True)
            host_dir.mkdir()
            out.mkdir()

        def manual() -> None:
            env = f"HF_HUB_DISABLE_PROGRESS_BARS=1 HF_ENDPOINT={hub.endpoint}"
            sh(f"ssh {opts} {user} {env} {sys.executable} -c \"\\\"{MANUAL}\\\"\" {host_dir}/hub")
            sh(f"ssh {opts} {user} tar cf {host_dir}/big.tar -C {host_dir}/hub models--org--big")
            sh(f"scp -q {scp_opts} {user}:{host_dir}/big.tar {out}/big.tar")
            sh(f"sha256sum {out}/big.tar > /dev/null")

        def ours() -> None:
            subprocess.run([sys.executable, "-m", "edgetam_provision", "fetch", *server.ssh_args(),
                            "--remote-python", sys.executable, "--endpoint", hub.endpoint,
                            "--repo", "org/big", "--out", str(out), "-q"], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)

        try:
            times = interleave({"provision fetch": ours,
                                "manual: ssh download + tar + scp + sha256sum": manual}, 3, setup=clean)
        finally:
            server.stop()
            hub.stop()
    return f"Machine: {machine()}\n\n" + table(
        f"Fetch of a {size / 2**20:.0f} MiB repo end to end (loopback, Hub stand-in)", times,
        "manual: ssh download + tar + scp + sha256sum")


if __name__ == "__main__":
    print(main())
