"""The recoverable window: which points a backup plus the archived WAL can reach, per timeline.

Pure arithmetic over what the archive holds (segment names, their upload times, history files) and the
catalog. Recovery replays segments in order and stops at the first missing one, so a backup reaches
exactly up to the end of the first contiguous run of segments after its start on the timeline path
that leads to the target timeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, HistoryEntry, Lsn, segment_name
from opsdb.model.target import as_lsn, as_time, physical_complete

# (timeline, segment number) -> upload time of the archived segment (seconds since the epoch)
ArchivedSegments = Mapping[tuple[int, int], float]


def timeline_of_segment(segno: int, target_timeline: int, history: Sequence[HistoryEntry], segment_size: int) -> int:
    """The timeline whose file PostgreSQL reads for segment segno when recovering along target_timeline.

    history is the target timeline's history (its ancestors, oldest first). The segment holding a switch
    point is read from the newer timeline (which begins inside it)."""
    for entry in history:
        if segno < entry.switch_lsn.segment_number(segment_size):
            return entry.parent_timeline
    return target_timeline


def on_path(timeline: int, lsn: Lsn, target_timeline: int, history: Sequence[HistoryEntry], segment_size: int) -> bool:
    """True when position lsn of `timeline` lies on the path to target_timeline (a backup there can reach it)."""
    if timeline == target_timeline:
        return True
    for entry in history:
        if entry.parent_timeline == timeline:
            return lsn < entry.switch_lsn
    return False


@dataclasses.dataclass(frozen=True)
class WalWalk:
    """Contiguous WAL from first_segno: last_segno is the last present one (first_segno - 1 if none)."""

    first_segno: int
    last_segno: int
    end_lsn: Lsn  # end of the last present segment: the furthest point replay can reach
    end_time: float | None  # upload time of that segment (an upper bound of the commit times it holds)
    first_missing: str | None  # name of the first missing segment, if the walk stopped at one
    segment_size: int = DEFAULT_SEGMENT_SIZE
    # the first archived segment on the path after first_missing: set when the walk stopped at a gap
    # (WAL exists beyond it that recovery cannot reach), None when it stopped at the archive's end
    resumes_at: str | None = None

    @property
    def count(self) -> int:
        return max(0, self.last_segno - self.first_segno + 1)

    @property
    def has_gap(self) -> bool:
        return self.resumes_at is not None


def walk(
    start_segno: int,
    target_timeline: int,
    history: Sequence[HistoryEntry],
    archived: ArchivedSegments,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> WalWalk:
    """Follow archived segments from start_segno along the timeline path until the first missing one."""
    segno = start_segno
    end_time: float | None = None
    for _ in range(len(archived) + 1):  # bounded: each step consumes one archived segment
        tli = timeline_of_segment(segno, target_timeline, history, segment_size)
        if (tli, segno) not in archived:
            break
        end_time = archived[(tli, segno)]
        segno += 1
    last = segno - 1
    missing_tli = timeline_of_segment(segno, target_timeline, history, segment_size)
    beyond = [
        s for (t, s) in archived if s > segno and timeline_of_segment(s, target_timeline, history, segment_size) == t
    ]
    resumes = None
    if beyond:
        first = min(beyond)
        resumes = segment_name(timeline_of_segment(first, target_timeline, history, segment_size), first, segment_size)
    return WalWalk(
        first_segno=start_segno,
        last_segno=last,
        end_lsn=Lsn((last + 1) * segment_size),
        end_time=end_time,
        first_missing=segment_name(missing_tli, segno, segment_size),
        segment_size=segment_size,
        resumes_at=resumes,
    )


def newest_on_path(
    archived: ArchivedSegments, target_timeline: int, history: Sequence[HistoryEntry], segment_size: int
) -> int | None:
    """The newest archived segment number recovery along target_timeline would read, or None."""
    found = [s for (t, s) in archived if timeline_of_segment(s, target_timeline, history, segment_size) == t]
    return max(found, default=None)


@dataclasses.dataclass(frozen=True)
class RecoveryEnd:
    """The last points recovery can stop at in the contiguous archived WAL, read from its records.

    PostgreSQL stops for recovery_target_time only at a commit or abort record whose time is at or
    after the target, and for recovery_target_lsn only at a record starting at or after the target;
    past those it reaches the end of WAL and fails ("recovery ended before configured recovery
    target was reached")."""

    lsn: Lsn | None  # start of the last complete record
    time: datetime | None  # time of the last commit or abort record (None: none found)
    record: str | None = None  # that commit/abort, as pg_waldump describes it, for messages


@dataclasses.dataclass(frozen=True)
class BackupWindow:
    """What one backup can reach on one target timeline. usable=False when its own WAL is incomplete."""

    backup: Any
    timeline: int
    from_lsn: Lsn
    from_time: datetime | None
    to_lsn: Lsn
    to_time: datetime | None
    wal: WalWalk
    # where to_lsn/to_time come from: the archive's segment ends and upload times (an upper bound),
    # or the WAL records themselves (what recovery can really stop at: see RecoveryEnd)
    end_source: str = "archive"

    @property
    def usable(self) -> bool:
        return self.to_lsn >= self.from_lsn

    def ending_at(self, end: RecoveryEnd) -> BackupWindow:
        """This window with its end read from the WAL records (RecoveryEnd) instead of the archive."""
        if not self.usable or self.wal.count == 0:
            return self
        lsn = max(end.lsn, self.from_lsn) if end.lsn is not None else self.to_lsn
        return dataclasses.replace(self, to_lsn=lsn, to_time=end.time, end_source="records")


def backup_window(
    backup: Any,
    target_timeline: int,
    history: Sequence[HistoryEntry],
    archived: ArchivedSegments,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> BackupWindow | None:
    """The window of one backup on target_timeline, or None if the backup is not on that timeline's path."""
    start = as_lsn(backup.start_lsn) or as_lsn(backup.stop_lsn)
    stop = as_lsn(backup.stop_lsn)
    assert start is not None and stop is not None
    tli = int(getattr(backup, "timeline", 1) or 1)
    if not on_path(tli, start, target_timeline, history, segment_size):
        return None
    from_time = as_time(getattr(backup, "stop_time", None))
    if getattr(backup, "wal_included", False):
        # the backup carries its own WAL up to stop: it is consistent by itself, and the archive is
        # needed only from the segment holding the stop point on
        wal = walk(stop.segment_number(segment_size), target_timeline, history, archived, segment_size)
        if wal.end_lsn < stop:
            return BackupWindow(backup, target_timeline, stop, from_time, stop, from_time, wal)
    else:
        wal = walk(start.segment_number(segment_size), target_timeline, history, archived, segment_size)
    to_time = datetime.fromtimestamp(wal.end_time, UTC) if wal.end_time is not None else None
    return BackupWindow(
        backup=backup,
        timeline=target_timeline,
        from_lsn=stop,
        from_time=from_time,
        to_lsn=wal.end_lsn,
        to_time=to_time,
        wal=wal,
    )


def walked_names(window: BackupWindow, history: Sequence[HistoryEntry], segment_size: int) -> list[str]:
    """The names of the contiguous archived segments a window's recovery reads, oldest first."""
    wal = window.wal
    return [
        segment_name(timeline_of_segment(s, window.timeline, history, segment_size), s, segment_size)
        for s in range(wal.first_segno, wal.last_segno + 1)
    ]


def ending_at_records(
    windows: Sequence[BackupWindow],
    read_end: Callable[[Sequence[str]], RecoveryEnd | None],
    history: Sequence[HistoryEntry],
    segment_size: int,
) -> list[BackupWindow]:
    """Each window with its end read from the WAL records; windows ending in the same segment share one read."""
    ends: dict[str, RecoveryEnd | None] = {}
    out = []
    for w in windows:
        names = walked_names(w, history, segment_size) if w.usable else []
        if not names:
            out.append(w)
            continue
        if names[-1] not in ends:
            ends[names[-1]] = read_end(names)
        end = ends[names[-1]]
        out.append(w.ending_at(end) if end is not None else w)
    return out


@dataclasses.dataclass(frozen=True)
class TimelineWindow:
    """The recoverable window of one timeline: the union of its backups' windows (None when empty)."""

    timeline: int
    windows: list[BackupWindow]

    @property
    def usable(self) -> list[BackupWindow]:
        return [w for w in self.windows if w.usable]

    @property
    def from_lsn(self) -> Lsn | None:
        return min((w.from_lsn for w in self.usable), default=None)

    @property
    def to_lsn(self) -> Lsn | None:
        return max((w.to_lsn for w in self.usable), default=None)

    @property
    def from_time(self) -> datetime | None:
        times = [w.from_time for w in self.usable if w.from_time is not None]
        return min(times) if times else None

    @property
    def to_time(self) -> datetime | None:
        times = [w.to_time for w in self.usable if w.to_time is not None]
        return max(times) if times else None


def timeline_window(
    target_timeline: int,
    backups: Iterable[Any],
    history: Sequence[HistoryEntry],
    archived: ArchivedSegments,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> TimelineWindow:
    windows = []
    for backup in physical_complete(backups):
        window = backup_window(backup, target_timeline, history, archived, segment_size)
        if window is not None:
            windows.append(window)
    return TimelineWindow(target_timeline, windows)
