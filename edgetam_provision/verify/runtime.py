"""Which libraries and devices can run EdgeTAM: one set of rules for `verify` and `doctor`.

Versions are compared with `packaging.version` ("5.0.0rc1" is a pre-release of 5.0.0, not 5.0.1).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from types import ModuleType

from packaging.version import InvalidVersion, Version

LIBRARIES = ("torch", "torchvision", "transformers", "timm", "huggingface_hub", "pillow", "numpy")
REQUIRED = ("torch", "torchvision", "transformers", "timm", "huggingface_hub")
FIRST_EDGETAM = Version("4.57")  # transformers releases before this have no EdgeTAM
#: full forward fails: "FeatureListNet.forward() got an unexpected keyword argument 'original_sizes'"
BROKEN_TRANSFORMERS = ((Version("5.17"), Version("5.18.dev0")),)
BACKBONE_NOT_NEEDED_FROM = Version("5.24")  # older releases read timm/repvit's config even offline
REQUESTS_HUB_BEFORE = Version("1.0")  # huggingface_hub < 1.0 uses requests, which reads ~/.netrc
DEVICES = ("auto", "mps", "cuda", "cpu")
UPGRADE = "pip install 'transformers>=5.24' (or `uv add 'transformers>=5.24'`)"


def parse_version(text: str) -> Version:
    """A version, or 0 for what cannot be parsed ("missing", local builds with odd tags)."""
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries EdgeTAM needs ("missing" when absent), and Python's."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


@dataclass(frozen=True)
class Verdict:
    """Whether one library can serve EdgeTAM: ok, and if not, why and the fix."""

    ok: bool
    detail: str
    fix: str = ""


def library_verdict(name: str, installed: str) -> Verdict:
    """The rule for one library's installed version."""
    if installed == "missing":
        return Verdict(False, "not installed", "run `make setup` (or pip install -e .)")
    if name != "transformers":
        return Verdict(True, installed)
    v = parse_version(installed)
    if v < FIRST_EDGETAM:
        return Verdict(False, f"{installed} has no EdgeTAM", UPGRADE)
    if any(lo <= v < hi for lo, hi in BROKEN_TRANSFORMERS):
        return Verdict(False, f"{installed} cannot run EdgeTAM's forward pass", UPGRADE)
    return Verdict(True, installed)


def needs_backbone_config(transformers_version: str) -> bool:
    """transformers releases before 5.24 read timm/repvit_m1.dist_in1k's config, even offline."""
    return parse_version(transformers_version) < BACKBONE_NOT_NEEDED_FROM


def hub_reads_netrc(hub_version: str) -> bool:
    """requests-based huggingface_hub (< 1.0) sends ~/.netrc entries as Basic auth."""
    return parse_version(hub_version) < REQUESTS_HUB_BEFORE


def available_devices(torch: ModuleType) -> list[str]:
    """The devices this torch can use, in the order `--device auto` prefers them. (`torch` is the
    module, passed in so that tests can give a fake one.)"""
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    cuda = bool(torch.cuda.is_available())
    return [d for d, ok in (("mps", mps), ("cuda", cuda), ("cpu", True)) if ok]


def choose_device(requested: str, torch: ModuleType) -> str:
    """auto prefers MPS, then CUDA, then CPU; an explicit device must be available."""
    from ..errors import EnvironmentProblem, UsageError

    have = available_devices(torch)
    if requested == "auto":
        return have[0]
    if requested not in DEVICES:
        raise UsageError(f"unknown device {requested!r}", "use auto, mps, cuda or cpu")
    if requested not in have:
        raise EnvironmentProblem(f"{requested} is not available on this machine",
                                 "pick the device automatically (or use cpu)")
    return requested


def synchronize(torch: ModuleType, device: str) -> None:
    """Wait for queued GPU work, so timers measure it."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()
