"""Pulling an archive over SSH: `provision fetch`'s data paths vs OpenSSH scp and `ssh host cat`.

All read the same file from the same local sshd (started here, as in the tests). The provision
side is the real code, hashing every byte and writing ``.part`` + rename: `openssh.pull_openssh`
(the ssh binary in 1 or 4 ranges) and the paramiko exec channel (`pull.pull` over the agent's
`send`). Anchors: scp, and `ssh -c aes128-gcm@openssh.com host cat` (this machine's ceiling).
Then the same through a TCP proxy adding 20 ms each way (ProxyCommand; this kernel has no netem).

Usage: python benchmarks/bench_pull.py [SIZE...] [--latency SIZE]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from common import ROOT, interleave, machine, sh, table
from sshd import SSHServer

from edgetam_provision.fetch.client import stream_source
from edgetam_provision.fetch.openssh import pull_openssh
from edgetam_provision.fetch.protocol import Stream
from edgetam_provision.fetch.pull import pull
from edgetam_provision.fetch.ssh import connect, resolve_target
from edgetam_provision.integrity.hashing import sha256_file

SENDER = ("import sys,json,threading;from pathlib import Path;"
          "from edgetam_provision.remote.channel import send;"
          "C=type('C',(),{'lock':threading.Lock(),'out':sys.stdout.buffer});"
          "c=json.loads(sys.stdin.readline());send(Path(c['path']),c['offset'],c['prefix_sha256'],C)")
LATENCY = ROOT / "tests" / "helpers" / "latency_proxy.py"


def target_for(server: SSHServer, proxy: str | None = None):
    target = resolve_target("127.0.0.1", port=server.port, user=server.user,
                            identity=str(server.client_key), known_hosts=str(server.known_hosts))
    return target if proxy is None else type(target)(**{**target.__dict__, "proxy_command": proxy})


def paramiko_pull(target, src: Path, dest: Path, sha: str) -> None:
    with connect(target) as conn:
        chan = conn.exec(f"cd {ROOT} && {sys.executable} -c \"{SENDER}\"")
        stream = Stream(chan.recv, chan.sendall, "bench")
        real_send = stream.send_json
        stream.send_json = lambda obj: real_send({**obj, "path": str(src)})  # type: ignore[method-assign]
        event = SimpleNamespace(archive=src.name, size=src.stat().st_size, sha256=sha)
        pull(stream_source(stream, event), event, dest, False)
        chan.close()


def make_file(root: Path, size: int) -> tuple[Path, str]:
    src = root / f"archive-{size}.tar"
    with open(src, "wb") as fh:
        left = size
        while left:
            fh.write(os.urandom(min(left, 1 << 24)))
            left -= min(left, 1 << 24)
    return src, sha256_file(src)


def compare(server: SSHServer, root: Path, size: int, delay: float = 0.0) -> str:
    """One size: the same random file pulled every way, interleaved."""
    src, sha = make_file(root, size)
    dest = root / "dest"
    dest.mkdir(exist_ok=True)
    proxy = f"{sys.executable} {LATENCY} %h %p {delay}" if delay else None
    target = target_for(server, proxy.replace("%h", "127.0.0.1").replace("%p", str(server.port))
                        if proxy else None)
    opts = (f"-i {server.client_key} -o UserKnownHostsFile={server.known_hosts} -o BatchMode=yes "
            f"-o IdentitiesOnly=yes" + (f" -o 'ProxyCommand={proxy}'" if proxy else ""))
    user = f"{server.user}@127.0.0.1"
    event = SimpleNamespace(archive=src.name, size=size, sha256=sha)

    def clean() -> None:
        for p in dest.iterdir():
            p.unlink()

    def ours(streams: int) -> object:
        return pull_openssh(target, str(src), event, dest, False, 30, streams)

    contenders = {
        "provision pull (ssh binary, 1 stream)": lambda: ours(1),
        "provision pull (ssh binary, 4 streams)": lambda: ours(4),
        "provision pull (paramiko channel)": lambda: paramiko_pull(target, src, dest, sha),
        "scp": lambda: sh(f"scp -q -P {server.port} {opts} {user}:{src} {dest}/scp.tar"),
        "ssh -c aes128-gcm cat": lambda: sh(f"ssh -c aes128-gcm@openssh.com -p {server.port} {opts} {user} "
                                            f"cat {src} > {dest}/cat.tar"),
    }
    if delay:  # window-bound on a slow link: the paramiko channel only adds minutes here
        contenders.pop("provision pull (paramiko channel)")
    times = interleave(contenders, 5 if size <= 104_857_600 else 3, setup=clean)
    src.unlink()
    where = f"through {delay * 1000:.0f} ms each way" if delay else "loopback"
    return table(f"Pull of a {size / 2**20:.0f} MiB archive over SSH ({where})", times, "scp",
                 higher_is_better=True, sizes={k: size for k in times})


def main() -> str:
    args = sys.argv[1:]
    latency = [int(args.pop(args.index("--latency") + 1))] if "--latency" in args else []
    if "--latency" in args:
        args.remove("--latency")
    sizes = [int(a) for a in args] or [104_857_600, 1_073_741_824]
    latency = latency or [268_435_456]
    report = [f"Machine: {machine()}\n"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        (root / "sshd").mkdir()
        server = SSHServer(root / "sshd")
        try:
            report += [compare(server, root, size) for size in sizes]
            report += [compare(server, root, size, delay=0.02) for size in latency]
        finally:
            server.stop()
    return "\n".join(report)


if __name__ == "__main__":
    print(main())
