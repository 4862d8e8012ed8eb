"""The command line: the only package that imports click. Commands parse, call the library, render."""

from . import backups, doctor, fetch, fleet, serve, verify  # each registers its commands on `cli`
from .app import cli, main

__all__ = ["backups", "cli", "doctor", "fetch", "fleet", "main", "serve", "verify"]
