"""Fleet host names and the other values push gives Ansible: data, never templates.

Ansible renders ``{{ … }}`` (and ``{% … %}``) in inventory names and variables on the controller,
so a host name is a program unless it is kept from the template engine. Two rules, both applied:

- a destination must match the grammar below (what OpenSSH takes as ``[ssh://][user@]host[:port]``,
  narrowed to the characters a host name, an IPv4/IPv6 address or an ``~/.ssh/config`` alias
  needs), checked before anything is run or written: one usage error names every bad one;
- every string push puts into the inventory or the extra variables is marked unsafe
  (``{"__ansible_unsafe": …}``, which Ansible's JSON loader reads for inventories and ``-e @file``
  alike), so even a value that got through (a ``--remote-python`` or ``--backups`` path) is passed
  through literally, never rendered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..fsutil import write_atomic

MAX_DESTINATION = 255
_USER = r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}"
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.+-]{0,252})"  # host name, IPv4 address or ssh config alias
_IPV6 = r"\[[0-9A-Fa-f:.]{2,45}(?:%[A-Za-z0-9_.-]{1,32})?\]"
DESTINATION = re.compile(
    rf"(?:ssh://)?(?:(?P<user>{_USER})@)?(?P<host>{_IPV6}|{_NAME})(?::(?P<port>\d{{1,5}}))?", re.ASCII)
DESTINATION_HINT = ("a fleet host is host, user@host, user@host:port, ssh://user@host:port, [IPv6]:port "
                    "or an ~/.ssh/config alias: letters, digits and . _ + - only")


@dataclass(frozen=True)
class Destination:
    """One fleet host as the user gave it, split as ssh reads it."""

    given: str
    host: str
    user: str | None = None
    port: int | None = None


def parse_destination(text: str) -> Destination | None:
    """The destination, or None when `text` is not one (see the module's grammar)."""
    m = DESTINATION.fullmatch(text) if len(text) <= MAX_DESTINATION else None
    if m is None:
        return None
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        return None
    return Destination(text, m.group("host").strip("[]"), m.group("user"), port)


def parse_destinations(texts: tuple[str, ...]) -> list[Destination]:
    """Every destination, or one usage error naming each one that is not (nothing is run)."""
    parsed = [(t, parse_destination(t)) for t in texts]
    bad = [t for t, d in parsed if d is None]
    if bad:
        shown = ", ".join(ascii(t) if len(t) <= 80 else ascii(t[:77]) + "…" for t in bad)
        raise UsageError(f"not a valid fleet host: {shown}", DESTINATION_HINT)
    return [d for _, d in parsed if d is not None]


def unsafe(value: Any) -> Any:
    """`value` with every string marked unsafe for Ansible's JSON loader (never templated)."""
    if isinstance(value, str):
        return {"__ansible_unsafe": value}
    if isinstance(value, dict):
        return {k: unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unsafe(v) for v in value]
    return value


def write_inventory(hosts: list[Destination], python: str | None,
                    folder: Path) -> tuple[Path, dict[str, str]]:
    """A JSON inventory (every value marked unsafe) and inventory name -> the name the user gave:
    each host is named by its host name (numbered only when two share one)."""
    entries: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for d in hosts:
        inv = d.host if d.host not in names else f"{d.host}-{len(names)}"
        names[inv] = d.given
        entries[inv] = {"ansible_host": d.host, **({"ansible_port": d.port} if d.port else {}),
                        **({"ansible_user": d.user} if d.user else {})}
    group: dict[str, Any] = {"hosts": entries}
    if python:
        group["vars"] = {"ansible_python_interpreter": python}
    path = folder / "inventory.json"
    write_atomic(path, json.dumps({"all": {"children": {"fleet": unsafe(group)}}}, indent=1), mode=0o600)
    return path, names


def write_extra_vars(extra: dict[str, Any], folder: Path) -> Path:
    """The extra variables as a JSON file for ``-e @FILE``, every string marked unsafe."""
    path = folder / "vars.json"
    write_atomic(path, json.dumps(unsafe(extra)), mode=0o600)
    return path
