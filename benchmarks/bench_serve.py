"""`provision serve` vs nginx serving the same blob files as static files (Debian's nginx).

16 parallel clients (curl) each pull the whole repo (2 x 128 MiB); aggregate throughput, same run,
interleaved. Then time-to-first-byte of a small file (median of 20 requests each). Goals: >= 0.8x
nginx's throughput, TTFB <= 5 ms.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import interleave, machine, table
from sshd import free_port

from edgetam_provision.hub.layout import repo_folder_name
from edgetam_provision.verify.synthetic import install_into_cache

CLIENTS = 16
FILES = {"shard-0.safetensors": 128 * 2**20, "shard-1.safetensors": 128 * 2**20}


def main() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        return "nginx is not installed (apt-get install nginx-light): no comparison\n"
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        cache = root / "cache"
        files = {n: os.urandom(size) for n, size in FILES.items()}
        files["config.json"] = b"{}"
        install_into_cache(cache, "bench/big", files)
        snap = next((cache / repo_folder_name("bench/big") / "snapshots").iterdir())
        blobs = {n: (snap / n).resolve() for n in files}
        ng_port, our_port = free_port(), free_port()
        conf = root / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # workers must read the private temp folder
        conf.write_text(f"""{user} worker_processes 2; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on;
  server {{ listen 127.0.0.1:{ng_port}; location /blobs/ {{ alias {blobs['config.json'].parent}/; }} }} }}
""")
        ng = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root), "-g", "daemon off;"])
        ours = subprocess.Popen([sys.executable, "-m", "edgetam_provision", "serve", "--cache-dir",
                                 str(cache), "--repo", "bench/big", "--port", str(our_port)],
                                stderr=subprocess.DEVNULL)
        for _ in range(100):  # both answer
            probes = (f"http://127.0.0.1:{our_port}/api/models/bench/big", f"http://127.0.0.1:{ng_port}/blobs/")
            ok = [subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", u],
                                 capture_output=True, text=True).stdout for u in probes]
            if ok[0] == "200" and ok[1] in ("403", "404", "200"):
                break
            time.sleep(0.1)
        urls = {"provision serve": [f"http://127.0.0.1:{our_port}/bench/big/resolve/main/{n}" for n in FILES],
                "nginx (static files)": [f"http://127.0.0.1:{ng_port}/blobs/{blobs[n].name}" for n in FILES]}
        try:
            def pull_all(name: str) -> None:
                args = [a for u in urls[name] for a in (u, "-o", "/dev/null")]
                procs = [subprocess.Popen(["curl", "-sf", *args]) for _ in range(CLIENTS)]
                assert all(p.wait() == 0 for p in procs)

            times = interleave({k: (lambda k=k: pull_all(k)) for k in urls}, 3)
            total = CLIENTS * sum(FILES.values())
            small = {"provision serve": f"http://127.0.0.1:{our_port}/bench/big/resolve/main/config.json",
                     "nginx (static files)": f"http://127.0.0.1:{ng_port}/blobs/{blobs['config.json'].name}"}
            ttfb = {k: statistics.median(float(subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{time_starttransfer}", u], capture_output=True,
                text=True).stdout) for _ in range(20)) * 1000 for k, u in small.items()}
        finally:
            ours.terminate()
            ng.terminate()
            ours.wait()
            ng.wait()
    lines = [f"Machine: {machine()}\n",
             table(f"{CLIENTS} clients each pulling a {sum(FILES.values()) / 2**20:.0f} MiB repo (loopback)",
                   times, "nginx (static files)", higher_is_better=True, sizes={k: total for k in times}),
             "Time to first byte of a small file (median of 20): "
             + ", ".join(f"{k} {v:.2f} ms" for k, v in ttfb.items()) + "\n"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
