"""The one SSH seam: resolve a host like OpenSSH, check its key, connect with deadlines, exec.

- ``HOST`` may be an alias from ``~/.ssh/config``: HostName, User, Port, IdentityFile,
  ProxyCommand, ProxyJump and UserKnownHostsFile are honoured; CLI flags override them.
- Host keys are checked against every known_hosts file OpenSSH reads. Unknown keys are refused
  unless ``accept_new`` (then exactly one line is appended); a *changed* key is always refused.
- ``HOST`` may also be ``user@host:port`` or ``ssh://user@host:port``; ProxyJump takes a chain
  ``a,b,c`` of such hops. paramiko's own `SSHConfig.lookup` expands ``%h %p %r``: CLI overrides
  are put in front of the config so that its expansion sees them.
- Transfers use an exec channel with a 16 MiB window, 256 KiB packets and AES-GCM preferred
  (benchmarks/results/pull.md: 0.79x the throughput of scp for 100 MiB on loopback, 0.55x for
  1 GiB; where an ``ssh`` binary is installed, `openssh` carries the bytes instead).
- Every step has a deadline; a silent peer raises `RemoteConnectError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from ..console import ProgressFn, no_progress
from ..errors import HostKeyError, RemoteAuthError, RemoteConnectError, UsageError
from .limits import TIMEOUT_S

WINDOW = 16 * 1024 * 1024
MAX_PACKET = 256 * 1024
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")
DESTINATION_RE = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@/\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^@:/\s]+)"
                            r"(?::(?P<port>\d{1,5}))?/?$")


def parse_destination(text: str) -> tuple[str | None, str, int | None]:
    """``[ssh://][user@]host[:port]`` -> (user, host, port), as OpenSSH reads a destination."""
    m = DESTINATION_RE.match(text)
    if not m or text.startswith("-"):
        raise UsageError(f"not a valid host: {text!r}",
                         "pass a host name, user@host:port, ssh://user@host:port or an ~/.ssh/config alias")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"not a valid port in {text!r}", "ports are 1-65535")
    return m.group("user"), m.group("host").strip("[]"), port


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect, after ssh_config and CLI overrides."""

    alias: str
    hostname: str
    port: int = 22
    user: str | None = None
    identities: tuple[str, ...] = ()
    proxy_command: str | None = None
    proxy_jump: str | None = None
    known_hosts: tuple[str, ...] = field(default_factory=tuple)
    ssh_config: str | None = None

    @property
    def known_hosts_key(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.hostname}:{self.port}"


def resolve_target(host: str, *, port: int | None = None, user: str | None = None,
                   identity: str | None = None, ssh_config: str | None = None,
                   known_hosts: str | None = None) -> SSHTarget:
    """Read ``~/.ssh/config`` (or `ssh_config`) for `host`; explicit arguments win."""
    user_at, bare, port_at = parse_destination(host or "")
    user, port = user or user_at, port or port_at
    cfg_path = Path(ssh_config or "~/.ssh/config").expanduser()
    if ssh_config and not cfg_path.is_file():
        raise UsageError(f"no such ssh config file: {ssh_config}", "check the path of the ssh config file")
    overrides = "".join(f"  {k} {v}\n" for k, v in (("Port", port), ("User", user)) if v)
    text = (f"Host {bare}\n{overrides}" if overrides else "") + (
        cfg_path.read_text(errors="replace") if cfg_path.is_file() else "")
    cfg: dict[str, Any] = paramiko.SSHConfig.from_text(text).lookup(bare) if text else {}
    files = [known_hosts] if known_hosts else (
        cfg.get("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2").split())
    files += ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"] if not known_hosts else []
    identities = [identity] if identity else list(cfg.get("identityfile", []))
    return SSHTarget(
        alias=bare, hostname=cfg.get("hostname", bare), port=int(cfg.get("port", 22)),
        user=cfg.get("user"),
        identities=tuple(str(Path(i).expanduser()) for i in identities),
        proxy_command=cfg.get("proxycommand"), proxy_jump=cfg.get("proxyjump"),
        known_hosts=tuple(str(Path(f).expanduser()) for f in files), ssh_config=str(cfg_path))


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys, or append exactly one known_hosts line when told to (and say so,
    with the key's type and fingerprint, as OpenSSH does)."""

    def __init__(self, target: SSHTarget, accept_new: bool, say: ProgressFn = no_progress) -> None:
        self.target, self.accept_new, self.say = target, accept_new, say

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        fp = key.fingerprint
        refuse_revoked(self.target, key)
        if not self.accept_new:
            raise HostKeyError(f"unknown host key for {self.target.known_hosts_key} ({key.get_name()} {fp})",
                               "check the fingerprint, then run again accepting the new host key "
                               "(or add it with ssh-keyscan to ~/.ssh/known_hosts)")
        path = Path(self.target.known_hosts[0])
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = f"{self.target.known_hosts_key} {key.get_name()} {key.get_base64()}\n"
        prefix = ""
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as fh:
                fh.seek(-1, 2)
                prefix = "" if fh.read(1) == b"\n" else "\n"
        # Hand-written: paramiko's HostKeys.save() rewrites the whole file (dropping lines it cannot
        # parse); OpenSSH's habit is to append exactly one line.
        with open(path, "a") as fh:
            fh.write(prefix + line)
        self.say(f"added the host key of {self.target.known_hosts_key} ({key.get_name()} {fp}) to {path}")


def refuse_revoked(target: SSHTarget, key: paramiko.PKey) -> None:
    """OpenSSH refuses a key marked ``@revoked`` in any known_hosts file, whatever else says."""
    blob = key.get_base64()
    for f in target.known_hosts:
        try:
            lines = Path(f).read_text(errors="replace").splitlines()
        except OSError:
            continue
        if any(ln.split()[:1] == ["@revoked"] and blob in ln.split() for ln in lines):
            raise HostKeyError(f"the host key of {target.known_hosts_key} is REVOKED in {f} "
                               f"({key.fingerprint})",
                               "do not connect; ask the host's administrator for its new key")


def _fast_transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """A paramiko Transport with a big window, big packets and AES-GCM first."""
    kwargs.update(default_window_size=WINDOW, default_max_packet_size=MAX_PACKET)
    t = paramiko.Transport(sock, **kwargs)
    opts = t.get_security_options()
    fast = [c for c in FAST_CIPHERS if c in opts.ciphers]
    opts.ciphers = tuple(fast + [c for c in opts.ciphers if c not in fast])
    return t


class Connection:
    """An authenticated SSH connection; `exec` opens a channel running one command."""

    def __init__(self, client: paramiko.SSHClient, target: SSHTarget, timeout: float,
                 jump: Connection | None) -> None:
        self.client, self.target, self.timeout, self._jump = client, target, timeout, jump

    def transport(self) -> paramiko.Transport:
        t = self.client.get_transport()
        if t is None:  # paramiko has none before connect() and after close()
            raise RemoteConnectError(f"lost the connection to {self.target.alias}",
                                     "run the same command again: the pull resumes")
        return t

    def exec(self, command: str) -> paramiko.Channel:
        """Start `command` on a fresh channel; reads time out after the step deadline."""
        t = self.transport()
        chan = t.open_session(window_size=WINDOW, max_packet_size=MAX_PACKET, timeout=self.timeout)
        chan.settimeout(self.timeout)
        chan.exec_command(command)
        return chan

    def round_trip(self, tries: int = 3) -> float:
        """Seconds for the server to answer an SSH request (the best of `tries`): the link's latency,
        without starting a process there (a keepalive the server refuses at once)."""
        t = self.transport()

        def pings() -> None:
            for _ in range(tries):
                t0 = time.monotonic()
                t.global_request("keepalive@openssh.com", wait=True)
                times.append(time.monotonic() - t0)

        times: list[float] = []
        asking = threading.Thread(target=pings, daemon=True)  # paramiko's wait has no deadline
        asking.start()
        asking.join(self.timeout)
        return min(times) if len(times) == tries else float("inf")

    def cipher(self) -> str:
        # types-paramiko lacks Transport.remote_cipher (paramiko sets it once keys are exchanged)
        cipher: str = self.transport().remote_cipher  # type: ignore[attr-defined]
        return cipher

    def close(self) -> None:
        """Close, quietly: after a lost connection there is nothing left to say to the peer."""
        with contextlib.suppress(Exception):
            self.client.close()
        if self._jump:
            self._jump.close()


def _sock_for(target: SSHTarget, timeout: float, accept_new: bool,
              say: ProgressFn = no_progress
              ) -> tuple[socket.socket | paramiko.ProxyCommand | paramiko.Channel, Connection | None]:
    """The socket to run SSH over: direct TCP, a ProxyCommand, or a channel through ProxyJump."""
    if target.proxy_jump and target.proxy_jump.lower() != "none":
        *earlier, last = target.proxy_jump.split(",")  # the last hop is reached through the earlier ones
        hop = resolve_target(last, ssh_config=target.ssh_config, known_hosts=target.known_hosts[0])
        hop = dataclasses.replace(hop, proxy_jump=",".join(earlier) or None,
                                  proxy_command=None if earlier else hop.proxy_command)
        jump = connect_raw(hop, timeout, accept_new, say)
        chan = jump.transport().open_channel(
            "direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0), timeout=timeout)
        return chan, jump
    if target.proxy_command and target.proxy_command.lower() != "none":  # %h %p %r: expanded by lookup
        return paramiko.ProxyCommand(target.proxy_command), None
    try:
        return socket.create_connection((target.hostname, target.port), timeout=timeout), None
    except OSError as exc:
        raise RemoteConnectError(f"cannot reach {target.describe()}: {exc.strerror or exc}",
                                 "check the host name, port and network (`ssh HOST` should work)") from None


def _load_known_hosts(keys: paramiko.HostKeys, path: Path) -> None:
    """Add every valid line of a known_hosts file; skip bad lines as OpenSSH does.

    Hand-written because paramiko's own loader stops at lines it cannot parse (``@cert-authority``,
    ``@revoked``, unknown key types); revoked keys are refused separately (`refuse_revoked`)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except Exception:
            continue
        if entry is not None and entry.key is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)


def connect_raw(target: SSHTarget, timeout: float = TIMEOUT_S, accept_new: bool = False,
                say: ProgressFn = no_progress) -> Connection:
    """Connect and authenticate, mapping every failure to its own error kind."""
    import logging

    # paramiko logs a traceback for a failed banner before raising; our one-line error says it all
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False

    sock, jump = _sock_for(target, timeout, accept_new, say)
    client = paramiko.SSHClient()
    for f in target.known_hosts:
        _load_known_hosts(client.get_host_keys(), Path(f))
    client.set_missing_host_key_policy(_HostKeyPolicy(target, accept_new, say))
    defaults = [str(Path("~/.ssh", n).expanduser()) for n in DEFAULT_IDENTITIES]
    keys = [k for k in (*target.identities, *defaults) if Path(k).is_file()]
    try:
        # key_filename: types-paramiko says str; paramiko takes "the filename, or list of filenames"
        client.connect(target.hostname, port=target.port, username=target.user,
                       key_filename=keys or None,  # type: ignore[arg-type]
                       allow_agent=True, look_for_keys=False, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout, channel_timeout=timeout, sock=sock,
                       transport_factory=_fast_transport)
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(f"host key for {target.known_hosts_key} has CHANGED (now {exc.key.fingerprint})",
                           "someone may be intercepting the connection; if the host was reinstalled, "
                           "remove its old line from known_hosts (ssh-keygen -R) and check the new "
                           "fingerprint") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise RemoteAuthError(f"{target.describe()} rejected our keys ({exc})",
                              "name a key file, load the key into ssh-agent, or check the login "
                              "user") from None
    except paramiko.SSHException as exc:
        client.close()
        if "No authentication methods available" in str(exc):  # it answered: we had no key to offer
            raise RemoteAuthError(f"no SSH key to offer {target.describe()} (none in ~/.ssh, none in "
                                  "ssh-agent, none named)", "name a key file, load a key into "
                                  "ssh-agent, or make one (ssh-keygen) and add it to the host's "
                                  "authorized_keys") from None
        raise RemoteConnectError(f"SSH to {target.describe()} failed: {exc or type(exc).__name__}",
                                 "the host did not answer in time (raise the deadline) or is not an "
                                 "SSH server") from None
    except (OSError, EOFError) as exc:
        client.close()
        raise RemoteConnectError(f"SSH to {target.describe()} failed: {exc or type(exc).__name__}",
                                 "the host did not answer in time (raise the deadline) or is not an "
                                 "SSH server") from None
    conn = Connection(client, target, timeout, jump)
    try:
        refuse_revoked(target, conn.transport().get_remote_server_key())
    except (HostKeyError, RemoteConnectError):
        client.close()
        raise
    return conn


@contextlib.contextmanager
def connect(target: SSHTarget, timeout: float = TIMEOUT_S, accept_new: bool = False,
            say: ProgressFn = no_progress) -> Iterator[Connection]:
    """`connect_raw` as a context manager that always closes."""
    conn = connect_raw(target, timeout, accept_new, say)
    try:
        yield conn
    finally:
        conn.close()
