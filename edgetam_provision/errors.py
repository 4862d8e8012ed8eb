"""Every failure the tool reports: one exception class per kind, each with its exit code.

The table below is the single place that maps error kinds to exit codes; the CLI renders any
`ProvisionError` as one line ``error: MESSAGE`` plus ``hint: HINT`` on stderr and exits with
its code. README.md's exit-code table is checked against `EXIT_CODES` by the tests.
"""

from __future__ import annotations


class ProvisionError(Exception):
    """Base class: a one-line message, an actionable hint, an exit code."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, object]:
        return {"error": self.kind, "message": self.message, "hint": self.hint,
                "exit_code": self.exit_code}


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


class ModelMissingError(ProvisionError):
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

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint or "nothing it sent was kept; use a host you trust, or run with "
                                          "--debug and report it if the host is yours")


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


#: exit code -> (error class, what it means). Code 0 is success.
EXIT_CODES: dict[int, tuple[str, str]] = {
    0: ("", "success"),
    **{cls.exit_code: (cls.__name__, (cls.__doc__ or "").strip()) for cls in (
        IntegrityError, UsageError, UnsafeArchiveError, CorruptArchiveError, CacheError,
        LockedError, ModelMissingError, EnvironmentProblem, VerificationFailed,
        RemoteConnectError, RemoteAuthError, HostKeyError, RemoteDownloadError, FleetError, HostMisbehaved,
        DownloadBlocked, Interrupted,
        InternalError,
    )},
}
