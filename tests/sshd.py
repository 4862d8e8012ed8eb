"""A real OpenSSH server on 127.0.0.1 for the tests, with its own keys and a fake home.

The session's HOME is a temporary folder holding the user's trap: a token file and a ~/.netrc entry
for the Hub's host; HF_TOKEN is set to a bogus value too (``SetEnv``). The real home of the account
running the tests is never touched. Started per test session, stopped by its PID.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
BOGUS_TOKEN = "hf_bogusStaleTokenFromLastYear0000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


class SSHServer:
    def __init__(self, root: Path, hub_host: str = "127.0.0.1", path_first: Path | None = None) -> None:
        self.root = root
        self.user = getpass.getuser()
        self.host_pub = keygen(root / "host_key")
        self.client_key = root / "client_key"
        (root / "authorized_keys").write_text(keygen(self.client_key) + "\n")
        self.home = root / "home"
        (self.home / ".cache" / "huggingface").mkdir(parents=True)
        (self.home / ".cache" / "huggingface" / "token").write_text(BOGUS_TOKEN)
        (self.home / ".netrc").write_text(f"machine {hub_host} login stale password {BOGUS_TOKEN}\n"
                                          f"machine localhost login stale password {BOGUS_TOKEN}\n")
        (self.home / ".netrc").chmod(0o600)
        self.known_hosts = root / "known_hosts"
        self.tmp = root / "tmp"  # the sessions' TMPDIR: the agents' folders of this server alone
        self.tmp.mkdir()
        self.log = root / "sshd.log"
        self.pidfile = root / "sshd.pid"
        self.path_first = path_first
        for _ in range(3):  # a port free when chosen may be taken before sshd binds it (parallel tests)
            self.port = free_port()
            if self._start():
                return
        raise RuntimeError(f"sshd found no free port: {self.log.read_text()}")

    def _start(self) -> bool:
        """Start sshd on self.port; False when that port was taken meanwhile."""
        root = self.root
        self.pidfile.unlink(missing_ok=True)  # the pid of this start alone says it is up
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_pub.split()[0]} "
                                    f"{self.host_pub.split()[1]}\n")
        config = root / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {root / 'host_key'}",
            f"PidFile {self.pidfile}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
            "Subsystem sftp internal-sftp", "AllowTcpForwarding yes", "LogLevel VERBOSE",
            f"SetEnv HOME={self.home} TMPDIR={self.tmp} HF_TOKEN={BOGUS_TOKEN} "
            f"HUGGING_FACE_HUB_TOKEN={BOGUS_TOKEN}"
            + (f" PATH={self.path_first}:/usr/local/bin:/usr/bin:/bin" if self.path_first else ""),
        ]) + "\n")
        with contextlib.suppress(PermissionError):  # root's privsep dir; non-root sshd needs none
            Path("/run/sshd").mkdir(exist_ok=True)
        self._log_fh = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=self._log_fh,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.pidfile.exists():
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return True
                except OSError:
                    pass
            if self.proc.poll() is not None:
                self._log_fh.close()
                if "Address already in use" in self.log.read_text():
                    return False
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {self.log.read_text()}")

    def ssh_args(self) -> list[str]:
        """Flags for `provision fetch` to reach this server with the test's own key and known_hosts."""
        return ["--host", "127.0.0.1", "--port", str(self.port), "--user", self.user,
                "--identity", str(self.client_key), "--known-hosts", str(self.known_hosts)]

    def openssh(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a command there with the OpenSSH client (for control experiments)."""
        return subprocess.run(["ssh", "-p", str(self.port), "-i", str(self.client_key),
                               "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "BatchMode=yes",
                               "-o", "IdentitiesOnly=yes", f"{self.user}@127.0.0.1", *command],
                              capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        try:
            os.kill(int(self.pidfile.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log_fh.close()
