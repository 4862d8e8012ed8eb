"""This package as a wheel for the fleet's hosts, built with the standard library alone.

A pure-Python wheel is a zip of the package folder plus three small files (METADATA, WHEEL,
RECORD; PEP 427): no pip, uv or setuptools is needed to make one, so push works from any venv,
a uv-made one (no pip) included. What goes in: every file of the package folder but bytecode
caches and hidden files (the tests compare it with what setuptools builds from pyproject.toml).
Metadata comes from pyproject.toml beside the package (a source checkout) where Python can read
it, else from the package itself. The zip is deterministic (sorted, fixed times), so the same
sources give the same bytes and Ansible's checksum sees nothing new to copy.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path
from typing import Any

from .. import __version__
from ..fsutil import atomic_writer

PACKAGE = Path(__file__).resolve().parents[1]
NAME = "edgetam-provision"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: no build time in the bytes
SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", "~")


def project_metadata(package: Path = PACKAGE) -> dict[str, Any]:
    """[project] of the pyproject.toml beside the package, when there is one Python can read."""
    if sys.version_info < (3, 11):  # tomllib is Python 3.11+
        return {}
    else:
        import tomllib

        try:
            project = tomllib.loads((package.parent / "pyproject.toml").read_text()).get("project", {})
        except (OSError, ValueError):
            return {}
        return project if isinstance(project, dict) and project.get("name") == NAME else {}


def package_files(package: Path = PACKAGE) -> list[Path]:
    """Every file the wheel carries, relative to the package's parent, sorted."""
    found = []
    for path in package.rglob("*"):
        rel = path.relative_to(package.parent)
        if (path.is_file() and not any(p in SKIPPED_DIRS or p.startswith(".") for p in rel.parts)
                and not path.name.endswith(SKIPPED_SUFFIXES)):
            found.append(rel)
    return sorted(found, key=str)


def _metadata(project: dict[str, Any]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {project.get('version', __version__)}"]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    for extra, deps in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f"Requires-Dist: {dep}; extra == \"{extra}\"" for dep in deps]
    return "\n".join(lines) + "\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(dest: Path, package: Path = PACKAGE) -> Path:
    """Write the wheel into `dest` (temp file + rename) and return its path."""
    project = project_metadata(package)
    version = str(project.get("version", __version__))
    dist_info = f"{NAME.replace('-', '_')}-{version}.dist-info"
    scripts = project.get("scripts", {"provision": "edgetam_provision.cli:main"})
    files: list[tuple[str, bytes]] = [(rel.as_posix(), (package.parent / rel).read_bytes())
                                      for rel in package_files(package)]
    files += [(f"{dist_info}/METADATA", _metadata(project).encode()),
              (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: edgetam-provision\n"
                                     b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
              (f"{dist_info}/entry_points.txt", ("[console_scripts]\n" + "".join(
                  f"{k} = {v}\n" for k, v in scripts.items())).encode()),
              (f"{dist_info}/top_level.txt", f"{package.name}\n".encode())]
    record = "\n".join([*(_record_line(n, d) for n, d in files), f"{dist_info}/RECORD,,"]) + "\n"
    files.append((f"{dist_info}/RECORD", record.encode()))
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{NAME.replace('-', '_')}-{version}-py3-none-any.whl"
    with atomic_writer(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path
