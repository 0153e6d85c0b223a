"""The plan of a drill: which point to restore to, from which backup, and whether the WAL is there.

A target outside the recoverable window is bad input (UsageError, exit 2). A gap in the WAL the
target needs is not: it is what a drill exists to find, so it becomes a failed "WAL coverage" check
and the drill still restores, to show how far a real recovery would get.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opsdb.errors import UsageError
from opsdb.model.lineage import backup_start, backup_timeline
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, Lsn, segment_name
from opsdb.model.report import FAIL, PASS, BackupRef, Check, Interval, TimelinePicture
from opsdb.model.target import RecoveryTarget, as_lsn, as_time, choose_backup, physical_complete
from opsdb.model.window import (
    TimelineWindow,
    ending_at_records,
    newest_on_path,
    on_path,
    timeline_of_segment,
    timeline_window,
    walk,
)
from opsdb.ops.recovery.timelines import following_line
from opsdb.repo import wal as walrepo
from opsdb.storage.base import Storage


@dataclasses.dataclass(frozen=True)
class DrillPlan:
    target: RecoveryTarget
    target_kind: str  # latest | time | random
    target_time: datetime  # for latest: when the drill started (so RPO includes archiving lag)
    backup: Any
    backup_ref: BackupRef
    timeline: int
    wal_names: list[str]  # contiguous archived segments from the backup's start
    archive_end_lsn: Lsn | None
    coverage: Check
    picture: TimelinePicture
    # where replay must get to for the drill to pass: for the latest target the end of the archived
    # WAL on the timeline (a lower bound here; run_drill reads the last record with pg_waldump)
    planned_end: Lsn | None = None

    @property
    def wal_last(self) -> str | None:
        return self.wal_names[-1] if self.wal_names else None


def backup_ref(record: Any) -> BackupRef:
    start, stop = as_lsn(getattr(record, "start_lsn", None)), as_lsn(getattr(record, "stop_lsn", None))
    return BackupRef(
        id=record.id,
        start_time=as_time(getattr(record, "start_time", None)),
        stop_time=as_time(getattr(record, "stop_time", None)),
        start_lsn=str(start) if start else None,
        stop_lsn=str(stop) if stop else None,
        timeline=getattr(record, "timeline", None),
        size_bytes=getattr(record, "size_bytes", None),
        stored_bytes=getattr(record, "stored_bytes", None),
    )


def _picture(scan: walrepo.ArchiveScan, backups: Sequence[Any], timeline: int, window: Any) -> TimelinePicture:
    """WAL coverage in time: each contiguous run of segments spans from the upload of the segment
    before it (or its first) to the upload of its last; the spaces between runs are gaps."""
    intervals: list[Interval] = []
    seg_size = scan.segment_size
    history = scan.history(timeline)
    tlis = {timeline} | {h.parent_timeline for h in history}
    ranges = sorted((r for t in tlis for r in scan.ranges.get(t, [])), key=lambda r: r.first)
    previous_end: datetime | None = None
    for r in ranges:
        if timeline_of_segment(r.first, timeline, history, seg_size) != r.timeline and r.timeline != timeline:
            continue
        first_t = datetime.fromtimestamp(scan.segments[(r.timeline, r.first)], UTC)
        before = scan.segments.get((r.timeline, r.first - 1))
        start = datetime.fromtimestamp(before, UTC) if before else first_t - timedelta(seconds=1)
        end = datetime.fromtimestamp(scan.segments[(r.timeline, r.last)], UTC)
        if previous_end is not None and start > previous_end:
            missing = f"{segment_name(r.timeline, ranges[ranges.index(r) - 1].last + 1, seg_size)}..{segment_name(r.timeline, r.first - 1, seg_size)}"
            intervals.append(Interval(previous_end, first_t, "gap", f"missing {missing}"))
            start = first_t
        a, b = r.names(seg_size)
        intervals.append(Interval(min(start, end), end, "wal", f"{a}..{b}"))
        previous_end = end
    refs = [backup_ref(b) for b in physical_complete(backups)]
    return TimelinePicture(backups=refs, wal=intervals, window_start=window.from_time, window_end=window.to_time)


def make_plan(
    storage: Storage,
    cluster: str,
    keys: Mapping[str, Any],
    backups: Sequence[Any],
    target_kind: str,
    to_time: datetime | None,
    *,
    drill_started: datetime,
    rng: random.Random,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    read_end: Any = None,
    live_timeline: int | None = None,
) -> DrillPlan:
    """read_end (ops/recovery/pitr_reach.py): the window ends at the last archived commit, so a --random target
    is one PostgreSQL can stop at. live_timeline: the primary's timeline now, when it answered; the
    drill follows the primary's line (ops/recovery/timelines.py), not the highest timeline in the archive."""
    if not physical_complete(backups):
        raise UsageError(
            f"no complete physical backup of cluster {cluster!r} to drill", hint="run `opsdb backup` first"
        )
    scan = walrepo.scan(storage, cluster, keys, segment_size)
    # the primary's line (ops/recovery/timelines.py), not the highest timeline: a copy restored next to the
    # primary may have archived a branch the primary is not on
    timeline = following_line(backups, scan, live_timeline).timeline
    history = scan.history(timeline)
    window = timeline_window(timeline, backups, history, scan.segments, segment_size)
    if read_end is not None:
        window = TimelineWindow(timeline, ending_at_records(window.windows, read_end, history, segment_size))
    if target_kind == "random":
        if window.from_time is None or window.to_time is None or window.to_time <= window.from_time:
            raise UsageError(
                "the recoverable window is empty: nothing to pick a random target from",
                hint="see `opsdb info`; a backup and archived WAL after it are needed",
            )
        span = (window.to_time - window.from_time).total_seconds()
        to_time = window.from_time + timedelta(seconds=rng.uniform(0, span))
    if target_kind in ("time", "random"):
        assert to_time is not None
        if to_time > drill_started:
            raise UsageError(f"the drill target {to_time.isoformat()} is in the future")
        if window.from_time is not None and to_time <= window.from_time:
            raise UsageError(
                f"the drill target {to_time.isoformat()} is before the recoverable window "
                f"({window.from_time.isoformat()} .. {window.to_time.isoformat() if window.to_time else '?'})",
                hint="the earliest point is the end of the oldest backup: see `opsdb info`",
            )
        target = RecoveryTarget("time", time=to_time, timeline=timeline)
        target_time = to_time
    else:
        target = RecoveryTarget("latest", timeline=timeline)
        target_time = drill_started
    on_line = [
        b
        for b in physical_complete(backups)
        if on_path(backup_timeline(b), backup_start(b), timeline, history, segment_size)
    ]
    backup = choose_backup(target, on_line or backups)
    start = as_lsn(backup.start_lsn) or as_lsn(backup.stop_lsn)
    assert start is not None
    w = walk(start.segment_number(segment_size), timeline, history, scan.segments, segment_size)
    names = [
        segment_name(timeline_of_segment(s, timeline, history, segment_size), s, segment_size)
        for s in range(w.first_segno, w.last_segno + 1)
    ]
    coverage = _coverage(scan, timeline, w, target_time if target_kind != "latest" else None, backup)
    planned_end = None
    newest = newest_on_path(scan.segments, timeline, history, segment_size)
    if target_kind == "latest" and newest is not None:
        planned_end = Lsn(newest * segment_size)  # at least into the newest archived segment
    return DrillPlan(
        target=target,
        target_kind=target_kind,
        target_time=target_time,
        backup=backup,
        backup_ref=backup_ref(backup),
        timeline=timeline,
        wal_names=names,
        archive_end_lsn=w.end_lsn if w.count else None,
        coverage=coverage,
        picture=_picture(scan, backups, timeline, window),
        planned_end=planned_end,
    )


def _coverage(scan: walrepo.ArchiveScan, timeline: int, w: Any, target_time: datetime | None, backup: Any) -> Check:
    name = "WAL coverage"
    stop = as_lsn(backup.stop_lsn)
    if stop is not None and w.end_lsn <= stop:
        return Check(name, FAIL, f"backup {backup.id} cannot reach consistency: {w.first_missing} is not archived")
    newest = max((r.last for r in scan.ranges.get(timeline, [])), default=w.last_segno)
    end_time = datetime.fromtimestamp(w.end_time, UTC) if w.end_time else None
    if target_time is not None and end_time is not None and target_time > end_time:
        if newest > w.last_segno:
            return Check(
                name,
                FAIL,
                f"{w.first_missing} is missing from the archive: WAL after "
                f"{end_time.isoformat()} cannot be replayed, the target {target_time.isoformat()} is beyond it",
            )
        return Check(
            name,
            FAIL,
            f"the target is after the newest archived WAL ({end_time.isoformat()}): "
            "archiving lags behind (see archive_timeout)",
        )
    if target_time is None and newest > w.last_segno:
        return Check(
            name,
            FAIL,
            f"{w.first_missing} is missing from the archive: the newest archived WAL "
            f"({segment_name(timeline, newest, scan.segment_size)}) cannot be reached",
        )
    gap = f"; later gap at {w.first_missing}" if newest > w.last_segno else ""
    return Check(name, PASS, f"{w.count} contiguous segments from the backup's start on timeline {timeline}{gap}")
