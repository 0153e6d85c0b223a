"""Timelines for restore, drill and info: the live primary's timeline, the primary's line, and a
refusal that names every timeline that does reach the target (model/lineage.py says why)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opsdb.errors import OpsdbError, UsageError
from opsdb.model.lineage import PrimaryLine, primary_line, promoted_line
from opsdb.model.target import RecoveryTarget

T = TypeVar("T")
LIVE_TIMEOUT = 3.0  # seconds: a primary that does not answer quickly is treated as unreachable


def live_timeline(conninfo: str | None) -> int | None:
    """The timeline the server at conninfo is on now, or None when it cannot be asked."""
    if not conninfo:
        return None
    from opsdb.pg.conn import connect

    try:
        with connect(conninfo, timeout=LIVE_TIMEOUT) as conn:
            return conn.live_timeline()
    except OpsdbError:
        return None


def following_line(backups: Sequence[Any], scan: Any, live: int | None) -> PrimaryLine:
    """The primary's line in this archive: the live timeline only when the archive knows it (its
    .history is archived, or a backup was taken on it), else the newest backup's carried on through
    the promotions that continue it (model/lineage.promoted_line)."""
    known = {*scan.timelines, *(int(getattr(b, "timeline", 1) or 1) for b in backups), 1}
    line = primary_line(backups, scan.timelines, live if live in known else None)
    last = {tli: ranges[-1].last for tli, ranges in scan.ranges.items() if ranges}
    return promoted_line(line, scan.histories, last, scan.segment_size)


def plan_or_alternatives(plan: Callable[[RecoveryTarget], T], target: RecoveryTarget, timelines: Sequence[int]) -> T:
    """plan(target); when that is refused, the refusal also names every other timeline of the archive
    on which plan() would reach the target, with the flag that chooses it."""
    try:
        return plan(target)
    except UsageError as exc:
        reach = []
        for tli in sorted(set(timelines)):
            if tli == target.timeline:
                continue
            try:
                plan(dataclasses.replace(target, timeline=tli))
            except UsageError:
                continue
            reach.append(tli)
        if not reach:
            raise
        choices = ", ".join(f"timeline {t} (--timeline {t})" for t in reach)
        # the same class (a GapRefused stays one), the message extended with the choices
        raise type(exc)(f"{exc.message}; the target is reachable on {choices}", hint=exc.hint) from None


def plan_on_line(
    target: RecoveryTarget | None,
    backups: Sequence[Any],
    scan: Any,
    *,
    standby: bool,
    follow_primary: bool,
    live: int | None,
    **options: Any,
) -> Any:
    """ops/recovery/pitr.plan_for_restore along the primary's line when follow_primary (no --timeline given);
    the plan then says which timeline was chosen and why. A refused target names the other timelines
    that reach it. options: backup_id, accept_gap, read_end (passed through)."""
    from opsdb.ops.recovery.pitr import plan_for_restore

    if standby:  # a standby follows the primary's promotions: PostgreSQL's 'latest'
        return plan_for_restore(target, backups, scan, standby=True, **options)
    line = following_line(backups, scan, live) if follow_primary else None
    if target is None:
        timeline = line.timeline if line is not None else "latest"
        plan = plan_for_restore(None, backups, scan, standby=False, timeline=timeline, **options)
    else:
        if line is not None:
            target = dataclasses.replace(target, timeline=line.timeline)
        plan = plan_or_alternatives(
            lambda t: plan_for_restore(t, backups, scan, standby=False, **options), target, scan.timelines
        )
    if plan is not None and line is not None:
        plan = dataclasses.replace(plan, timeline_choice=line.describe(scan.latest_timeline()))
    return plan
