"""How far a recovering server got: the WAL between the backup's start and the planned end, as bytes
replayed out of bytes to replay, for the progress bar of `restore --start` and of a drill's replay.

The total is exact where the plan knows where recovery ends (--latest: the last record of the archived
WAL; --to-lsn; --immediate) and estimated otherwise (a time, xid or restore point target: the end of
the last archived segment the plan found it needs). LSNs count WAL bytes across timelines, so the
difference of two LSNs is the WAL between them whatever timeline switches lie in between. The position
is the server's replay LSN (pg_last_wal_replay_lsn()), or, while it cannot be logged into, the start of
the newest segment its log says it restored from the archive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from opsdb.errors import UsageError
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, Lsn, parse_wal_name
from opsdb.model.target import as_lsn

OnReplay = Callable[[int, int | None], None]  # (bytes of WAL replayed, bytes to replay or None)


@dataclasses.dataclass(frozen=True)
class ReplaySpan:
    start: Lsn  # where replay begins: the backup's start (its checkpoint's redo point)
    end: Lsn | None  # where it is planned to stop (None: unknown)

    @property
    def total(self) -> int | None:
        return self.end - self.start if self.end is not None and self.end > self.start else None

    def done(self, at: Lsn) -> int:
        return max(0, at - self.start)


def segment_start(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Lsn | None:
    """The first LSN of a WAL segment file (None for anything that is not a segment name)."""
    try:
        wal = parse_wal_name(name, segment_size)
    except UsageError:
        return None
    return Lsn(wal.segno * segment_size) if wal.segno is not None else None


def segment_end(name: str | None, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Lsn | None:
    """The LSN just past a WAL segment file (None without a segment name)."""
    first = segment_start(name, segment_size) if name else None
    return Lsn(first.value + segment_size) if first is not None else None


def planned_end(recovery: Mapping[str, Any], segment_size: int = DEFAULT_SEGMENT_SIZE) -> Lsn | None:
    """Where the restore plan (ops/recovery/pitr.py RecoveryPlan.to_json) says replay stops: its exact LSN when
    it has one, else the end of the last archived segment it needs, else the end of the window."""
    exact = as_lsn((recovery.get("reaches") or {}).get("lsn"))
    if exact is not None:
        return exact
    last = segment_end((recovery.get("wal") or {}).get("last"), segment_size)
    return last or as_lsn((recovery.get("window") or {}).get("to_lsn"))


def span_of_restore(backup: Any, recovery: Mapping[str, Any] | None) -> ReplaySpan | None:
    """The replay span of a restore plan (None when the backup's start is not recorded)."""
    start = as_lsn(getattr(backup, "start_lsn", None))
    if start is None:
        return None
    return ReplaySpan(start, planned_end(recovery or {}) if recovery else as_lsn(getattr(backup, "stop_lsn", None)))


def reporter(span: ReplaySpan | None, on_replay: OnReplay | None) -> Callable[[Lsn], None] | None:
    """A callback taking the server's replay position, handing (done, total) to on_replay. Positions never
    go back (the log's segment and the SQL LSN alternate when a login comes and goes). Replay starts now:
    on_replay hears (0, total) at once (the bar shows from the server's start, not from its first poll)."""
    if span is None or on_replay is None:
        return None
    furthest = [span.start]
    on_replay(0, span.total)

    def seen(at: Lsn) -> None:
        furthest[0] = max(furthest[0], at)
        on_replay(span.done(furthest[0]), span.total)

    return seen
