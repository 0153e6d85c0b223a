"""opsdb info: per cluster and timeline, the backups, the WAL archived, its gaps and the recoverable window."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from opsdb.model.lineage import branch_note
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, Lsn, segment_name
from opsdb.model.target import physical_complete
from opsdb.model.window import TimelineWindow, ending_at_records, timeline_window
from opsdb.ops.recovery.timelines import following_line
from opsdb.ops.wal.push_fetch import WalRepo
from opsdb.repo import wal as repo_wal


@dataclasses.dataclass(frozen=True)
class TimelineInfo:
    timeline: int
    parent: int | None  # the timeline this one branched from
    switch_lsn: Lsn | None  # where it branched
    first_segment: str | None
    last_segment: str | None
    segments: int
    gaps: list[tuple[str, str, int]]  # (first missing, last missing, count)
    backups: int  # complete physical backups taken on this timeline
    window: TimelineWindow
    primary_line: bool = False  # the primary's timeline or one it descends from (model/lineage.py)
    live: bool = False  # the live primary is on it now (when it could be asked)
    note: str | None = None  # why a timeline off the primary's line is there


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    cluster: str
    timeline: int  # the primary's line: what restore and drill follow by default (the window's timeline)
    backups: list[Any]  # complete physical backups, oldest first
    timelines: list[TimelineInfo]
    partials: list[str]
    stored_bytes: int
    newest_timeline: int = 1  # the highest timeline in the archive (what --timeline latest follows)
    live_timeline: int | None = None  # the live primary's, when it answered
    timeline_choice: str = ""  # why `timeline` is the primary's line

    @property
    def current(self) -> TimelineInfo | None:
        return next((t for t in self.timelines if t.timeline == self.timeline), None)

    @property
    def recoverable_from(self) -> tuple[datetime | None, Lsn | None]:
        cur = self.current
        return (cur.window.from_time, cur.window.from_lsn) if cur else (None, None)

    @property
    def recoverable_to(self) -> tuple[datetime | None, Lsn | None]:
        cur = self.current
        return (cur.window.to_time, cur.window.to_lsn) if cur else (None, None)


def cluster_info(
    repo: WalRepo,
    backups: Sequence[Any],
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    read_end: Any = None,
    *,
    live: int | None = None,
) -> ClusterInfo:
    """One listing of the WAL archive plus the catalog -> everything `opsdb info` shows.

    read_end (ops/recovery/pitr_reach.py): the window of the primary's line then ends where recovery can really
    stop (the last archived commit and record) instead of at the last segment's upload. `live`: the
    timeline the primary is on now (ops/recovery/timelines.live_timeline), when it could be asked."""
    scan = repo_wal.scan(repo.storage, repo.cluster, repo.keys, segment_size)
    complete = physical_complete(backups)
    timelines = sorted(set(scan.timelines) | {int(getattr(b, "timeline", 1) or 1) for b in complete})
    line = following_line(complete, scan, live)
    infos = []
    for tli in timelines:
        history = scan.history(tli)
        ranges = scan.ranges.get(tli, [])
        window = timeline_window(tli, complete, history, scan.segments, segment_size)
        if read_end is not None and tli == line.timeline:
            # the window `info` headlines is the primary's line: read its end from the WAL itself
            window = TimelineWindow(tli, ending_at_records(window.windows, read_end, history, segment_size))
        count = sum(1 for b in complete if int(getattr(b, "timeline", 1) or 1) == tli)
        note = branch_note(tli, line.timeline, scan.history, bool(count))
        infos.append(
            TimelineInfo(
                timeline=tli,
                parent=history[-1].parent_timeline if history else None,
                switch_lsn=history[-1].switch_lsn if history else None,
                first_segment=segment_name(tli, ranges[0].first, segment_size) if ranges else None,
                last_segment=segment_name(tli, ranges[-1].last, segment_size) if ranges else None,
                segments=sum(r.last - r.first + 1 for r in ranges),
                gaps=scan.gaps(tli),
                backups=count,
                window=window,
                primary_line=note is None,
                live=live is not None and tli == live,
                note=note,
            )
        )
    newest = max(timelines, default=1)
    return ClusterInfo(
        repo.cluster,
        line.timeline,
        complete,
        infos,
        scan.partials,
        scan.stored_bytes,
        newest_timeline=newest,
        live_timeline=live,
        timeline_choice=line.describe(newest),
    )
