"""The one error tree. Every failure a user can cause is an OpsdbError with a stable exit code.

cli/app.py is the only place that turns these into exit codes and messages.
Messages follow one style: "unable to <verb> <object>: <reason>", plus an optional hint.
"""

from __future__ import annotations


class OpsdbError(Exception):
    """Base of every expected failure. `exit_code` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(OpsdbError):
    """Bad arguments or input. Nothing was changed."""

    exit_code = 2


class ConfigError(UsageError):
    """Bad configuration file or value. Nothing was changed."""


class OperationFailed(OpsdbError):
    """The operation ran and failed (a backup, a verification, a drill)."""


class NotFound(OpsdbError):
    """A stored object, backup or report does not exist."""


class Conflict(OpsdbError):
    """Something exists that must not be replaced (an object, a lock held by another run)."""


class LockHeld(Conflict):
    """Another run holds the lock; the message names the holder."""


class RepositoryUnavailable(OpsdbError):
    """The repository could not be read or written after retries (network, permissions, 5xx)."""


class IntegrityError(OpsdbError):
    """Stored data failed authentication or checksum: tampered, truncated, reordered or wrong key."""


class KeyFileError(UsageError):
    """Encryption key missing, malformed or unsafe (e.g. world-readable)."""


class ToolError(OperationFailed):
    """An external program (pg_basebackup, pg_dump, pg_ctl ...) failed."""

    def __init__(self, argv0: str, returncode: int, stderr_tail: str, *, doing: str = "") -> None:
        self.argv0 = argv0
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        what = f" while {doing}" if doing else ""
        tail = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no error output"
        super().__init__(f"{argv0} failed{what} (exit {returncode}): {tail}")


class DatabaseError(OperationFailed):
    """PostgreSQL refused or failed a query or connection; carries the server's own message."""
