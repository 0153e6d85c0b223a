"""The PgBouncer version the pooler files are written and checked for: pgbouncer.target_version when
set, else what the local binary reports (`pgbouncer -V`), else the newest known. Used by
`pgbouncer generate` and `pgbouncer check`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from opsdb.errors import UsageError
from opsdb.model.pgbouncer_ini import NEWEST_KNOWN, Version, parse_version, version_str
from opsdb.proc import Cmd, Runner

PGBOUNCER_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")


def find_pgbouncer(configured: str | None = None) -> str | None:
    """pgbouncer.binary when set (it must be an executable file), else `pgbouncer` on PATH, else the
    usual package paths; None when there is none."""
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise UsageError(f"pgbouncer.binary {configured}: not an executable file")
        return configured
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((c for c in PGBOUNCER_CANDIDATES if os.access(c, os.X_OK)), None)


def pgbouncer_version(runner: Runner, binary: str | None) -> Version | None:
    """`pgbouncer -V` of the local binary, or None when there is none."""
    if binary is None:
        return None
    done = runner.run(Cmd((binary, "-V"), timeout=10), check=False, doing="asking pgbouncer for its version")
    return parse_version(done.text) if done.returncode == 0 else None


@dataclasses.dataclass(frozen=True)
class TargetVersion:
    """The PgBouncer version files are written and checked for, and where that came from."""

    version: Version
    source: str  # "target_version" (config) | "pgbouncer -V" | "assumed" (no binary)

    def describe(self) -> str:
        why = {
            "target_version": "pgbouncer.target_version",
            "pgbouncer -V": "reported by pgbouncer -V",
            "assumed": "no pgbouncer binary found: newest known",
        }[self.source]
        return f"PgBouncer {version_str(self.version)} ({why})"


def target_version(configured: str | None, runner: Runner, binary: str | None) -> TargetVersion:
    """pgbouncer.target_version when set (the binary is not asked), else the binary's own version."""
    if configured:
        parsed = parse_version(configured)
        if parsed is None:  # config validation already refuses this; kept for direct callers
            raise UsageError(f"pgbouncer.target_version {configured!r} is not a version such as '1.18'")
        return TargetVersion(parsed, "target_version")
    found = pgbouncer_version(runner, binary)
    return TargetVersion(found, "pgbouncer -V") if found else TargetVersion(NEWEST_KNOWN, "assumed")
