"""The one error tree. Every failure a user can cause is an OpsdbError with a stable exit code.

`exit_code()` below is the one exit-code policy: the Typer CLI (cli/app.py), the lean WAL path
(cli/fastpath.py) and the WAL helper's replies (which carry the error's type, never a code) all use it.
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


# wal-fetch (SPEC): only "not archived" may look like a normal miss to PostgreSQL
WAL_FETCH_MISSING_EXIT = 1
WAL_FETCH_UNREADABLE_EXIT = 128
INTERRUPTED_EXIT = 130


def exit_code(exc: BaseException, command: str | None = None) -> int:
    """The exit code for a failure of `command`: the one policy (SPEC: Exit codes).

    wal-fetch: for PostgreSQL every exit from 1 to 125 means "this file does not exist", which during
    archive recovery ends recovery (and may promote) at that point. So only NotFound ("not archived",
    answered from a proven repository) exits 1; anything else (repository unreachable, failed
    authentication, an unreadable config or key, a bug) exits above 125 and recovery stops instead of
    ending early at the wrong point. Everything else: the error's own code; a bug exits 1."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT
    if command == "wal-fetch":
        return WAL_FETCH_MISSING_EXIT if isinstance(exc, NotFound) else WAL_FETCH_UNREADABLE_EXIT
    if isinstance(exc, OpsdbError):
        return exc.exit_code
    return 1


def is_reported(exc: BaseException, command: str | None = None) -> bool:
    """Whether the failure is printed: a wal-fetch miss is PostgreSQL's normal end of the archive."""
    return not (command == "wal-fetch" and isinstance(exc, NotFound))


def by_name(name: str) -> type[OpsdbError]:
    """The error class named `name` (an error that crossed a process boundary by its type name);
    OperationFailed for names that are not plain OpsdbError classes."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, OpsdbError) and cls is not ToolError:
        return cls
    return OperationFailed
