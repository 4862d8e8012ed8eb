"""The host's environment made clean before huggingface_hub is imported, and huggingface_hub itself
(installed into the agent's temporary folder when the client asks for ``bootstrap``).

Clean: a private temporary HF_HOME and HOME, no HF_TOKEN / HUGGING_FACE_HUB_TOKEN, implicit token
disabled, ``NETRC=/dev/null`` (requests-based huggingface_hub sends Basic auth from ~/.netrc even
with token=False), no shared blob store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .channel import AgentError

CREDENTIAL_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH",
                   "HF_HUB_ENABLE_HF_TRANSFER")


def work_root() -> Path:
    """This account's work folder (read before the private HOME replaces the real one)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgetam-provision" / "work"


def clean_environment(tmp: Path, endpoint: str | None) -> None:
    """Strip every credential huggingface_hub or requests could send; set a private home."""
    for var in CREDENTIAL_VARS:
        os.environ.pop(var, None)
    home = tmp / "home"
    home.mkdir()
    os.environ.update({
        "HOME": str(home), "HF_HOME": str(tmp / "hf_home"), "NETRC": "/dev/null",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HUB_DISABLE_SHARED_BLOBS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_XET": "1", "DO_NOT_TRACK": "1",
    })
    os.environ.pop("HF_HUB_OFFLINE", None)
    if endpoint:
        os.environ["HF_ENDPOINT"] = endpoint


def import_hub(tmp: Path, bootstrap: bool, say: Any = lambda _: None) -> Any:
    """Import huggingface_hub, installing it into the temporary folder when asked to."""
    try:
        import huggingface_hub

        return huggingface_hub
    except ImportError:
        if not bootstrap:
            raise AgentError("missing-hub",
                             f"huggingface_hub is not installed for {sys.executable}") from None
    site = tmp / "site"
    say(f"installing huggingface_hub for Python {sys.version.split()[0]} into a temporary folder (pip)…")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-warn-script-location", "--target", str(site), "huggingface_hub"]
    if subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr).returncode != 0:
        raise AgentError("bootstrap", f"could not pip install huggingface_hub with {sys.executable}")
    sys.path.insert(0, str(site))
    import huggingface_hub

    return huggingface_hub

