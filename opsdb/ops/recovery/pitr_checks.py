"""Whether a recovery target is reachable: the refusals of restore planning (each a UsageError, exit 2,
with the recoverable window in the message) and the WAL gap a plan may accept.

A target that needs WAL beyond a missing segment is refused unless --accept-gap; a time after the last
archived commit, or an LSN after the last archived record, is refused with the real end and the ways out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from opsdb.errors import UsageError
from opsdb.model.target import RecoveryTarget, as_time, format_time
from opsdb.model.window import BackupWindow


class GapRefused(UsageError):
    """The target needs archived WAL beyond a missing segment (exit 2; --accept-gap restores up to it)."""


@dataclasses.dataclass(frozen=True)
class WalGap:
    """A missing segment between the backup's end and the target, and what the restore does about it."""

    first_missing: str
    resumes_at: str  # the first archived segment after the gap
    requested: str  # the target asked for (label)
    accepted: bool  # --accept-gap: the restore stops at the gap instead

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fmt(value: Any) -> str | None:
    return format_time(value) if value is not None else None


def describe_window(w: BackupWindow) -> str:
    start = f"{fmt(w.from_time) or '?'} (LSN {w.from_lsn})"
    end = f"{fmt(w.to_time) or '?'} (LSN {w.to_lsn})"
    return f"{start} .. {end} on timeline {w.timeline}"


def refuse(problem: str, window: BackupWindow, extra: str = "", hint: str | None = None) -> UsageError:
    missing = ""
    if window.wal.first_missing:
        missing = f"; the archive has no {window.wal.first_missing}"
    return UsageError(
        f"{problem}: backup {window.backup.id} can reach {describe_window(window)}{missing}{extra}",
        hint=hint or "choose a target inside that window (opsdb info shows every timeline's window)",
    )


def needs_wal_after(target: RecoveryTarget, window: BackupWindow) -> bool:
    """True when the target may lie beyond the end of the contiguous WAL (so beyond a gap there)."""
    if target.kind == "immediate":
        return False
    if target.kind == "time" and target.time is not None:
        return window.to_time is None or target.time > window.to_time
    if target.kind == "lsn" and target.lsn is not None:
        return target.lsn > window.to_lsn
    return True  # latest; xid and name: where they are is only found while replaying


def gap_refusal(target: RecoveryTarget, window: BackupWindow) -> GapRefused:
    wal = window.wal
    end = f"LSN {window.to_lsn}" + (f", last commit {format_time(window.to_time)}" if window.to_time else "")
    return GapRefused(
        f"the archived WAL has a gap: {wal.first_missing} is missing (the archive resumes at {wal.resumes_at}); "
        f"restoring to {target.describe()} would stop at the gap: backup {window.backup.id} can reach "
        f"{describe_window(window)}",
        hint=f"choose a target at or before {end} (--to-time/--to-lsn), or pass --accept-gap to restore up to "
        f"the gap and lose the WAL after it; `opsdb verify` names the missing objects. Nothing was written.",
    )


def check_reachable(target: RecoveryTarget, backup: Any, window: BackupWindow) -> None:
    by_records = window.end_source == "records"
    if target.kind == "time" and target.time is not None:
        start = as_time(getattr(backup, "stop_time", None))
        if start is not None and target.time <= start:
            raise refuse(f"target {format_time(target.time)} is before the end of the backup", window)
        if window.to_time is None or target.time > window.to_time:
            if not by_records:
                raise refuse(f"target {format_time(target.time)} is after the newest archived WAL", window)
            last = format_time(window.to_time) if window.to_time else "none found"
            raise refuse(
                f"target {format_time(target.time)} is after the newest archived WAL can reach "
                f"(the last commit or abort in it: {last})",
                window,
                hint="PostgreSQL stops for a time only at a commit: use --latest to restore everything archived, "
                "choose a time at or before the last commit, or wait until a later commit is archived "
                "(archive_timeout, `opsdb heartbeat`)",
            )
    if target.kind == "lsn" and target.lsn is not None:
        if target.lsn < window.from_lsn:
            raise refuse(f"target LSN {target.lsn} is before the end of the backup", window)
        if target.lsn > window.to_lsn:
            what = "the last record in it starts at" if by_records else "it ends at"
            raise refuse(
                f"target LSN {target.lsn} is after the newest archived WAL ({what} {window.to_lsn})",
                window,
                hint="use --latest, choose an LSN inside the window, or wait until more WAL is archived",
            )
