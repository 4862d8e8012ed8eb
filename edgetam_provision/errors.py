"""Every failure the tool reports: one exception class per kind, each with its exit code.

The table below is the single place that maps error kinds to exit codes; the CLI renders any
`ProvisionError` as one line ``error: MESSAGE`` plus ``hint: HINT`` on stderr and exits with
its code. README.md's exit-code table is checked against `EXIT_CODES` by the tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class Result(Protocol):
    """What a failure carries of the work it ended (a failed verdict's report): JSON on --json."""

    def to_dict(self) -> dict[str, Any]: ...


class ProvisionError(Exception):
    """Base class: a one-line message, an actionable hint, an exit code.

    The optional fields say what the failure is about, for programs (``to_dict``, --json): the
    `path`, `repo` and `revision` concerned, the OS `errno`, what was already `published` into the
    cache, and the `result` reached before the failure (the CLI renders it, then the error).
    """

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str = "", *, path: str | os.PathLike[str] | None = None,
                 repo: str | None = None, revision: str | None = None, errno: int | None = None,
                 published: Iterable[str] | None = None, result: Result | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = None if path is None else os.fspath(path)
        self.repo = repo
        self.revision = revision
        self.errno = errno
        self.published = None if published is None else tuple(published)
        self.result = result

    def to_dict(self) -> dict[str, Any]:
        """The result it carries (without its ``ok``), the error's keys, and each field that is set."""
        carried = {k: v for k, v in self.result.to_dict().items() if k != "ok"} if self.result else {}
        fields = {"path": self.path, "repo": self.repo, "revision": self.revision, "errno": self.errno,
                  "published": None if self.published is None else list(self.published)}
        return {**carried, "error": self.kind, "message": self.message, "hint": self.hint,
                "exit_code": self.exit_code, **{k: v for k, v in fields.items() if v is not None}}


class IntegrityError(ProvisionError):
    """Bytes do not match their hash, a manifest, or the cache layout."""

    exit_code = 1
    kind = "integrity"


class UsageError(ProvisionError):
    """Bad arguments or input files (missing path, malformed repo id, ...)."""

    exit_code = 2
    kind = "usage"


class UnsafeArchiveError(ProvisionError):
    """An archive member that could write outside its place or is not HF cache layout."""

    exit_code = 3
    kind = "unsafe-archive"


class CorruptArchiveError(ProvisionError):
    """An archive that cannot be read: truncated, bad compression, not a tar."""

    exit_code = 4
    kind = "corrupt-archive"


class CacheError(ProvisionError):
    """The cache cannot be written: permissions, disk full, a conflicting existing file."""

    exit_code = 5
    kind = "cache"


class LockedError(ProvisionError):
    """Another provision process holds the cache lock."""

    exit_code = 6
    kind = "locked"


class ModelMissingError(ProvisionError, FileNotFoundError):  # as huggingface_hub's LocalEntryNotFoundError
    """A repo, revision or file needed offline is not in the cache."""

    exit_code = 7
    kind = "model-missing"


class EnvironmentProblem(ProvisionError):
    """The installed libraries or device cannot run EdgeTAM."""

    exit_code = 8
    kind = "environment"


class VerificationFailed(ProvisionError):
    """The model loaded but its outputs failed a check (shape, finiteness, quality gate)."""

    exit_code = 9
    kind = "verification"


class RemoteConnectError(ProvisionError):
    """The SSH host cannot be reached, or went silent past its deadline."""

    exit_code = 10
    kind = "connection"


class RemoteAuthError(ProvisionError):
    """The SSH server rejected every key we offered."""

    exit_code = 11
    kind = "auth"


class HostKeyError(ProvisionError):
    """The SSH host key is unknown (and not accepted) or changed."""

    exit_code = 12
    kind = "host-key"


class RemoteDownloadError(ProvisionError):
    """The download on the remote host failed (hub error, missing library, bad repo)."""

    exit_code = 13
    kind = "remote-download"


class FleetError(ProvisionError):
    """One or more hosts of a push did not pass (the table says which and why)."""

    exit_code = 14
    kind = "fleet"


class HostMisbehaved(ProvisionError):
    """The fetch host broke the protocol: a bad event, a name or size it may not send, what was not asked."""

    exit_code = 15
    kind = "host-misbehaved"

    def __init__(self, message: str, hint: str = "", **fields: Any) -> None:
        super().__init__(message, hint or "nothing it sent was kept; use a host you trust, or run it "
                                          "again with tracebacks shown and report it if the host is yours",
                         **fields)


class DownloadBlocked(ProvisionError):
    """Downloads from the endpoint fail here: a rejected credential, offline mode, a CA bundle, no answer."""

    exit_code = 16
    kind = "download-blocked"


class Interrupted(ProvisionError):
    """Ctrl-C: everything written so far was rolled back or left resumable."""

    exit_code = 130
    kind = "interrupted"


class InternalError(ProvisionError):
    """A bug: an unexpected exception (run again with --debug for the traceback)."""

    exit_code = 70
    kind = "internal"


ERRORS: tuple[type[ProvisionError], ...] = (
    IntegrityError, UsageError, UnsafeArchiveError, CorruptArchiveError, CacheError,
    LockedError, ModelMissingError, EnvironmentProblem, VerificationFailed,
    RemoteConnectError, RemoteAuthError, HostKeyError, RemoteDownloadError, FleetError, HostMisbehaved,
    DownloadBlocked, Interrupted,
    InternalError,
)

#: exit code -> (error class, what it means). Code 0 is success.
EXIT_CODES: dict[int, tuple[str, str]] = {
    0: ("", "success"),
    **{cls.exit_code: (cls.__name__, (cls.__doc__ or "").strip()) for cls in ERRORS},
}


def error_from_dict(data: Mapping[str, Any]) -> ProvisionError:
    """The error whose `to_dict` this is (its class found by ``error``, the kind), as it comes back
    from another process of ours (verify's worker); an unknown kind is a plain `ProvisionError`."""
    cls = next((c for c in ERRORS if c.kind == data.get("error")), ProvisionError)
    published = data.get("published")
    return cls(str(data.get("message", "")), str(data.get("hint", "")), path=_text(data.get("path")),
               repo=_text(data.get("repo")), revision=_text(data.get("revision")),
               errno=data["errno"] if isinstance(data.get("errno"), int) else None,
               published=[str(p) for p in published] if isinstance(published, list) else None)


def _text(value: object) -> str | None:
    return None if value is None else str(value)
