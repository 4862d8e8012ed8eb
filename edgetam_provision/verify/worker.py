"""Fresh-process entry point of `provision verify`: offline first, then the run.

Reads a `VerifyRequest` as JSON on stdin, writes one JSON line on stdout: what it measured (the
parent judges it), or the error as `ProvisionError.to_dict` gives it. Progress goes to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

# Ctrl-C reaches this process too: end quietly, the parent says "interrupted" in one line.
signal.signal(signal.SIGINT, signal.SIG_DFL)

from .run import ensure_env_offline  # noqa: E402

ensure_env_offline()  # before anything imports huggingface_hub

from ..errors import EnvironmentProblem, ModelMissingError, ProvisionError  # noqa: E402
from .run import VerifyRequest  # noqa: E402
from .segment import run  # noqa: E402


def _progress(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def verify_synthetic(req: VerifyRequest) -> dict[str, Any]:
    """Build the random-weight EdgeTAM into a temporary cache and verify it there."""
    from .synthetic import SYNTHETIC_REPO, build_model_files, install_into_cache

    _progress("building a random-weight EdgeTAM (exact architecture) for the self-test…")
    with tempfile.TemporaryDirectory(prefix="edgetam-selftest-") as tmp:
        commit = install_into_cache(Path(tmp), SYNTHETIC_REPO, build_model_files())
        return run(dataclasses.replace(req, cache=tmp, repo_id=SYNTHETIC_REPO, revision=commit,
                                       backbone_cache=req.cache), _progress)


def main() -> int:
    req = VerifyRequest(**json.loads(sys.stdin.read()))
    # transformers < 5.24 looks up timm/repvit_m1.dist_in1k in the *default* cache even when the
    # model comes from another one: make the default the cache being verified.
    os.environ["HF_HUB_CACHE"] = req.cache
    try:
        if req.device != "auto":  # an absent device is said before the model is built or loaded
            import torch

            from .runtime import choose_device

            choose_device(req.device, torch)
        measured = verify_synthetic(req) if req.synthetic else run(req, _progress)
        print(json.dumps({"ok": True, "report": measured}))
    except ProvisionError as err:
        print(json.dumps({"ok": False, **err.to_dict()}))
    except Exception as exc:  # torch/transformers failing in ways we cannot foresee
        if req.debug or os.environ.get("PROVISION_DEBUG"):
            traceback.print_exc()
        print(json.dumps({"ok": False, **_unforeseen(exc).to_dict()}))
    return 0


def _unforeseen(exc: Exception) -> ProvisionError:
    text = (str(exc).strip().splitlines() or [""])[0][:240]
    if isinstance(exc, OSError) and ("huggingface.co" in text or "offline" in text.lower()):
        return ModelMissingError(f"EdgeTAM needs a file that is not cached ({text})",
                                 "transformers < 5.24 also needs timm/repvit_m1.dist_in1k in the cache: "
                                 "`provision fetch` gets it; or pip install 'transformers>=5.24'")
    return EnvironmentProblem(f"EdgeTAM could not run here: {type(exc).__name__}: {text}",
                              "run `provision doctor`; PROVISION_DEBUG=1 shows the traceback")


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip torch's slow interpreter teardown: everything is written and closed
