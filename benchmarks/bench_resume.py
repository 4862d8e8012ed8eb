"""What a host download cut at 80% costs the rerun, with huggingface_hub 0.36 and with this
environment's (>= 1.18): the download process is killed when the Hub stand-in has sent 80% of one
big file (as the agent is when the SSH link drops), then run again to the end.

    python bench_resume.py [SIZE_BYTES] [HUB036_SITE]

HUB036_SITE: a folder holding huggingface_hub 0.36 and requests (the tests build one from
.wheels/hub036); without it only this environment's hub is measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from common import machine
from hub_standin import HubRepo, HubStandIn

CODE = "import sys, huggingface_hub as h; h.snapshot_download('org/big', cache_dir=sys.argv[1], token=False)"


def run(hub: HubStandIn, size: int, site: str | None) -> dict[str, float]:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if site:
        env["PYTHONPATH"] = site
    with tempfile.TemporaryDirectory() as cache:
        sent = hub.bytes_sent
        hub.rate = 400e6  # slow enough to cut at 80%
        proc = subprocess.Popen([sys.executable, "-c", CODE, cache], env=env, stderr=subprocess.DEVNULL)
        while hub.bytes_sent - sent < 0.8 * size and proc.poll() is None:
            time.sleep(0.002)
        proc.kill()
        proc.wait()
        cut = hub.bytes_sent - sent
        hub.rate = None
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", CODE, cache], env=env, check=True, stderr=subprocess.DEVNULL)
        rerun_s = time.perf_counter() - t0
        rerun_bytes = hub.bytes_sent - sent - cut
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", CODE, cache], env=env, check=True, stderr=subprocess.DEVNULL)
        whole_s = time.perf_counter() - t0
    return {"cut": cut / size, "rerun": rerun_bytes / size, "rerun_s": rerun_s, "whole_s": whole_s}


def main() -> str:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 30
    site = sys.argv[2] if len(sys.argv) > 2 else None
    hub = HubStandIn([HubRepo("org/big", {"config.json": b"{}", "model.safetensors": os.urandom(size)})],
                     reject_credentials=False).start()
    lines = [f"Machine: {machine()}; one file of {size / 2**20:.0f} MiB, download killed at 80%, run again\n",
             "| host's huggingface_hub | cut at | the rerun downloads | rerun | a whole download |",
             "|---|---:|---:|---:|---:|"]
    import huggingface_hub

    for label, path in ([("0.36.2", site)] if site else []) + [(huggingface_hub.__version__, None)]:
        r = run(hub, size, path)
        lines.append(f"| {label} | {r['cut']:.0%} | {r['rerun']:.0%} of the file | {r['rerun_s']:.2f} s | "
                     f"{r['whole_s']:.2f} s |")
    hub.stop()
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main())
