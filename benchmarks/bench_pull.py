"""Pulling an archive over SSH: `provision fetch`'s transfer vs OpenSSH scp and `ssh host cat`.

All three read the same file from the same local sshd (started here, as in the tests). The
provision side is the real code: the agent's `send` on the host, `fetch.pull` here (16 MiB window,
256 KiB packets, AES-GCM first, sha256 while receiving, .part + rename). Goal: >= 1.3x scp.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from common import interleave, machine, sh, table
from sshd import SSHServer

from edgetam_provision.fetch import Stream, pull, stream_source
from edgetam_provision.fsutil import sha256_file
from edgetam_provision.remote import connect, resolve_target

SENDER = ("import sys,json;from pathlib import Path;from edgetam_provision.agent import send;"
          "c=json.loads(sys.stdin.readline());send(Path(c['path']),c['offset'],c['prefix_sha256'],"
          "sys.stdout.buffer)")


def provision_pull(server: SSHServer, src: Path, dest: Path, sha: str) -> None:
    target = resolve_target("127.0.0.1", port=server.port, user=server.user,
                            identity=str(server.client_key), known_hosts=str(server.known_hosts))
    with connect(target) as conn:
        chan = conn.exec(f"{sys.executable} -c \"{SENDER}\"")
        stream = Stream(chan.recv, chan.sendall, "bench")
        real_send = stream.send_json
        stream.send_json = lambda obj: real_send({**obj, "path": str(src)})  # type: ignore[method-assign]
        event = {"archive": src.name, "size": src.stat().st_size, "sha256": sha}
        pull(stream_source(stream, src.name), event, dest, False)
        chan.close()


def compare(server: SSHServer, root: Path, size: int) -> str:
    """One size: the same random file pulled three ways, interleaved."""
    src = root / f"archive-{size}.tar"
    with open(src, "wb") as fh:
        left = size
        while left:
            fh.write(os.urandom(min(left, 1 << 24)))
            left -= min(left, 1 << 24)
    sha = sha256_file(src)
    dest = root / "dest"
    dest.mkdir(exist_ok=True)
    ssh = (f"-i {server.client_key} -o UserKnownHostsFile={server.known_hosts} "
           "-o BatchMode=yes -o IdentitiesOnly=yes")
    user = f"{server.user}@127.0.0.1"

    def clean() -> None:
        for p in dest.iterdir():
            p.unlink()

    times = interleave({
        "provision pull": lambda: provision_pull(server, src, dest, sha),
        "scp": lambda: sh(f"scp -q -P {server.port} {ssh} {user}:{src} {dest}/scp.tar"),
        "ssh host cat": lambda: sh(f"ssh -p {server.port} {ssh} {user} cat {src} > {dest}/cat.tar"),
    }, 5 if size <= 104_857_600 else 3, setup=clean)
    src.unlink()
    return table(f"Pull of a {size / 2**20:.0f} MiB archive over SSH (loopback)", times, "scp",
                 higher_is_better=True, sizes={k: size for k in times})


def main() -> str:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000_000, 104_857_600, 1_000_000_000]
    report = [f"Machine: {machine()}\n"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        (root / "sshd").mkdir()
        server = SSHServer(root / "sshd")
        try:
            report += [compare(server, root, size) for size in sizes]
        finally:
            server.stop()
    return "\n".join(report)


if __name__ == "__main__":
    print(main())
