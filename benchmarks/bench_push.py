"""`provision push` to 1 host vs 2 and 3 hosts in parallel (copy + restore of a 100 MB backup).

Three sshd "hosts" on loopback (their own HOME each, as in the tests), real Ansible. Each round
starts from empty hosts. Goal: three hosts in parallel <= 1.5x the wall time of one host (verify is
left out: the test hosts share this machine's two cores).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import interleave, machine, table
from sshd import SSHServer

from edgetam_provision.backup import backup
from edgetam_provision.fleet.push import PushRequest, build_wheel, push
from edgetam_provision.repos import RepoSpec
from edgetam_provision.verify.synthetic import install_into_cache


def inventory(path: Path, servers: list[SSHServer]) -> Path:
    known = path.parent / "known_hosts"
    known.write_text("".join(s.known_hosts.read_text() for s in servers))
    lines = ["[fleet]"] + [f"host{i} ansible_host=127.0.0.1 ansible_port={s.port} "
                           f"ansible_ssh_private_key_file={s.client_key}" for i, s in enumerate(servers)]
    lines += ["[fleet:vars]", f"ansible_user={servers[0].user}",
              f"ansible_python_interpreter={sys.executable}",
              f"ansible_ssh_common_args='-o UserKnownHostsFile={known}'"]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> str:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        servers = [SSHServer(Path(tempfile.mkdtemp(dir=root))) for _ in range(3)]
        try:
            cache = root / "cache"
            install_into_cache(cache, "bench/model", {"model.safetensors": os.urandom(100_000_000),
                                                      "config.json": b"{}"})
            backups = root / "backups"
            backup(cache, [RepoSpec("bench/model")], backups)
            wheel = build_wheel(root)
            one, two = inventory(root / "one.ini", servers[:1]), inventory(root / "two.ini", servers[:2])
            three = inventory(root / "three.ini", servers)

            def empty() -> None:
                for s in servers:
                    shutil.rmtree(s.home / ".cache", ignore_errors=True)

            def run(inv: Path) -> None:
                res = push(PushRequest(hosts=(), backups=backups, inventory=inv, wheel=wheel,
                                       tags=("install", "copy", "restore")))
                assert all(r.restore == ("restored",) for r in res.hosts), res

            times = interleave({"push to 1 host": lambda: run(one), "push to 2 hosts": lambda: run(two),
                                "push to 3 hosts": lambda: run(three)}, 3, setup=empty)
        finally:
            for s in servers:
                s.stop()
    return f"Machine: {machine()}\n\n" + table("provision push of a 100 MB backup (install, copy, restore)",
                                                times, "push to 1 host")


if __name__ == "__main__":
    print(main())
