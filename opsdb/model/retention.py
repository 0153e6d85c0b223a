"""Retention planning: which backups, dumps and WAL files a policy keeps, and which rule decided it.

A pure function over catalog records and WAL names with an injected clock, so every rule is testable
without waiting for days. Deletion itself lives in ops/retention/apply.py.

Rules (a backup is kept when any rule keeps it, and every rule that keeps it is named):
  keep_last N     the newest N complete backups
  window W        every point in the last W stays recoverable: the newest backup that ended at or before
                  now - W, and every backup after it
  daily/weekly/monthly/yearly N
                  the newest backup of each of the last N calendar periods (the period containing now
                  counts as the first), in the cluster's timezone; weeks are ISO weeks starting on Monday
Chains (incremental backups, PostgreSQL 17+): the rules above choose restore points, and an incremental
backup is one like any other; every backup a kept incremental builds on (its parent, the parent's
parent, down to the full backup) is then kept too, with the rule "parent_of <child> (<child's rules>)",
so nothing a kept backup depends on is ever deleted. keep_last N therefore keeps the newest N restore
points and their chains, whatever mix of full and incremental backups they are.
Safety (always on): the newest complete backup is kept ("newest"); a backup that ended less than
min_age ago is kept ("min_age"); a policy with no rule at all keeps everything ("no_policy"); records
that are not complete are left alone ("not_complete").

WAL expiry: a segment on timeline T is needed by a retained backup that started on timeline Tb <= T
at a segment <= its own (timelines only grow, so a later timeline may descend from the backup's);
everything older than that is deleted. History files are always kept, and with no retained physical
backup no WAL is deleted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from opsdb.errors import UsageError
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, Lsn, WalName, parse_wal_name, segment_name

PERIODS = ("daily", "weekly", "monthly", "yearly")


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    """The [clusters.NAME.retention] section as plain values (ops builds it from RetentionConfig)."""

    keep_last: int | None = None
    window: timedelta | None = None
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    min_age: timedelta = timedelta(hours=1)
    dumps_keep_last: int | None = None
    dumps_daily: int = 0
    dumps_weekly: int = 0
    dumps_monthly: int = 0

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RetentionPolicy:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def backup_rules(self) -> dict[str, int | timedelta]:
        rules: dict[str, int | timedelta] = {}
        if self.keep_last:
            rules["keep_last"] = self.keep_last
        if self.window is not None:
            rules["window"] = self.window
        for period in PERIODS:
            if getattr(self, period):
                rules[period] = getattr(self, period)
        return rules

    def dump_rules(self) -> dict[str, int | timedelta]:
        rules: dict[str, int | timedelta] = {}
        if self.dumps_keep_last:
            rules["keep_last"] = self.dumps_keep_last
        for period in ("daily", "weekly", "monthly"):
            if getattr(self, f"dumps_{period}"):
                rules[period] = getattr(self, f"dumps_{period}")
        return rules


@dataclasses.dataclass(frozen=True)
class Item:
    """What retention needs to know about a catalog record (physical backup or logical dump)."""

    id: str
    start_time: datetime
    stop_time: datetime
    complete: bool = True
    timeline: int | None = None
    start_segment: int | None = None  # segment number holding start_lsn (physical backups only)
    parent: str | None = None  # incremental backups: the backup this one builds on

    @property
    def sort_key(self) -> tuple[datetime, datetime, str]:
        return (self.stop_time, self.start_time, self.id)


@dataclasses.dataclass(frozen=True)
class Decision:
    id: str
    keep: bool
    rules: tuple[str, ...]  # the rules that kept it, or ("expired",) when none did
    start_time: datetime
    stop_time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": "keep" if self.keep else "delete",
            "rules": list(self.rules),
            "start_time": self.start_time.isoformat(),
            "stop_time": self.stop_time.isoformat(),
        }


@dataclasses.dataclass(frozen=True)
class WalExpiry:
    """A contiguous run of archived WAL files on one timeline that no retained backup needs."""

    timeline: int
    first: str
    last: str
    names: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "timeline": self.timeline,
            "first": self.first,
            "last": self.last,
            "files": len(self.names),
            "reason": self.reason,
        }


@dataclasses.dataclass(frozen=True)
class RetentionPlan:
    now: datetime
    backups: tuple[Decision, ...]
    dumps: tuple[Decision, ...]
    wal: tuple[WalExpiry, ...]

    @property
    def backups_to_delete(self) -> list[str]:
        return [d.id for d in self.backups if not d.keep]

    @property
    def dumps_to_delete(self) -> list[str]:
        return [d.id for d in self.dumps if not d.keep]

    @property
    def wal_to_delete(self) -> list[str]:
        return [name for run in self.wal for name in run.names]

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "backups": [d.to_dict() for d in self.backups],
            "dumps": [d.to_dict() for d in self.dumps],
            "wal": [w.to_dict() for w in self.wal],
            "summary": {
                "backups_deleted": len(self.backups_to_delete),
                "backups_kept": len(self.backups) - len(self.backups_to_delete),
                "dumps_deleted": len(self.dumps_to_delete),
                "dumps_kept": len(self.dumps) - len(self.dumps_to_delete),
                "wal_files_deleted": len(self.wal_to_delete),
            },
        }


# --- adapting catalog records -----------------------------------------------------------------


def _as_datetime(value: Any, what: str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise UsageError(f"retention: {what} is not a time: {value!r}")
    if value.tzinfo is None:
        raise UsageError(f"retention: {what} has no UTC offset: {value.isoformat()}")
    return value


def item_from_record(record: Any, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Item:
    """An Item from a catalog record (BackupRecord/DumpRecord or a dict with the SPEC's JSON fields)."""

    def get(name: str) -> Any:
        return record.get(name) if isinstance(record, dict) else getattr(record, name, None)

    record_id = str(get("id"))
    start = _as_datetime(get("start_time"), f"backup {record_id} start_time")
    stop_raw = get("stop_time")
    stop = _as_datetime(stop_raw, f"backup {record_id} stop_time") if stop_raw is not None else start
    status = get("status")
    status = getattr(status, "value", status)
    timeline = get("timeline")
    start_lsn = get("start_lsn")
    start_segment = None
    if start_lsn is not None:
        lsn = start_lsn if isinstance(start_lsn, Lsn) else Lsn.parse(str(start_lsn))
        start_segment = lsn.segment_number(segment_size)
    return Item(
        id=record_id,
        start_time=start,
        stop_time=stop,
        complete=status in (None, "complete"),
        timeline=int(timeline) if timeline is not None else None,
        start_segment=start_segment,
        parent=None if get("parent") is None else str(get("parent")),
    )


# --- calendar periods -------------------------------------------------------------------------


def period_key(moment: datetime, period: str, tz: tzinfo) -> date:
    """The first day of the calendar period containing moment, in tz."""
    day = moment.astimezone(tz).date()
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    if period == "yearly":
        return day.replace(month=1, day=1)
    raise ValueError(f"unknown period {period!r}")


def recent_periods(now: datetime, period: str, count: int, tz: tzinfo) -> set[date]:
    """The keys of the last `count` periods, the one containing now first."""
    current = period_key(now, period, tz)
    keys: set[date] = set()
    for back in range(count):
        if period == "daily":
            keys.add(current - timedelta(days=back))
        elif period == "weekly":
            keys.add(current - timedelta(weeks=back))
        elif period == "monthly":
            months = current.year * 12 + current.month - 1 - back
            keys.add(date(months // 12, months % 12 + 1, 1))
        else:
            keys.add(date(current.year - back, 1, 1))
    return keys


# --- the plan ---------------------------------------------------------------------------------


def _decide(
    items: Sequence[Item], rules: dict[str, int | timedelta], min_age: timedelta, now: datetime, tz: tzinfo
) -> tuple[Decision, ...]:
    complete = sorted((i for i in items if i.complete), key=lambda i: i.sort_key, reverse=True)  # newest first
    reasons: dict[str, list[str]] = {i.id: [] for i in items}
    for item in items:
        if not item.complete:
            reasons[item.id].append("not_complete")
    if complete:
        reasons[complete[0].id].append("newest")
    if not rules:
        for item in complete:
            reasons[item.id].append("no_policy")
    for name, value in rules.items():
        if name == "keep_last":
            assert isinstance(value, int)
            for item in complete[:value]:
                reasons[item.id].append("keep_last")
        elif name == "window":
            assert isinstance(value, timedelta)
            start = now - value
            for item in complete:
                reasons[item.id].append("window")
                if item.stop_time <= start:
                    break  # the newest backup that ended before the window: recovery into it starts here
        else:
            assert isinstance(value, int)
            wanted = recent_periods(now, name, value, tz)
            seen: set[date] = set()
            for item in complete:  # newest first, so the first seen per period is its newest
                key = period_key(item.stop_time, name, tz)
                if key in wanted and key not in seen:
                    seen.add(key)
                    reasons[item.id].append(name)
    for item in complete:
        if now - item.stop_time < min_age:
            reasons[item.id].append("min_age")
    decisions = [
        Decision(i.id, bool(reasons[i.id]), tuple(reasons[i.id]) or ("expired",), i.start_time, i.stop_time)
        for i in items
    ]
    return tuple(sorted(decisions, key=lambda d: (d.stop_time, d.start_time, d.id)))


def keep_chains(decisions: Sequence[Decision], items: Sequence[Item]) -> tuple[Decision, ...]:
    """Keep every ancestor of a kept backup, naming the child and the rules that kept the child."""
    parent_of = {i.id: i.parent for i in items}
    by_id = {d.id: d for d in decisions}
    extra: dict[str, list[str]] = {}
    for decision in sorted(decisions, key=lambda d: d.id, reverse=True):  # children before their parents
        if not (decision.keep or extra.get(decision.id)):
            continue
        rules = [*(decision.rules if decision.keep else ()), *extra.get(decision.id, [])]
        parent = parent_of.get(decision.id)
        if parent is not None and parent in by_id:
            extra.setdefault(parent, []).append(f"parent_of {decision.id} ({', '.join(rules)})")
    return tuple(
        dataclasses.replace(d, keep=True, rules=(*(d.rules if d.keep else ()), *extra[d.id])) if d.id in extra else d
        for d in decisions
    )


def wal_expiry(
    retained: Iterable[Item], wal_names: Iterable[str | WalName], segment_size: int = DEFAULT_SEGMENT_SIZE
) -> tuple[WalExpiry, ...]:
    """The WAL runs no retained physical backup needs (see the module docstring)."""
    anchors = sorted(
        (i.timeline, i.start_segment, i.id) for i in retained if i.timeline is not None and i.start_segment is not None
    )
    if not anchors:
        return ()
    by_tli: dict[int, list[WalName]] = {}
    for raw in wal_names:
        wal = raw if isinstance(raw, WalName) else parse_wal_name(raw, segment_size)
        if wal.kind == "history" or wal.segno is None:
            continue
        by_tli.setdefault(wal.timeline, []).append(wal)
    runs: list[WalExpiry] = []
    for tli in sorted(by_tli):
        applicable = [(seg, bid) for (btli, seg, bid) in anchors if btli <= tli]
        if applicable:
            cutoff, backup_id = min(applicable)
            reason = f"before the start of backup {backup_id} ({segment_name(tli, cutoff, segment_size)})"
        else:
            cutoff, reason = 2**64, f"timeline {tli} is older than every retained backup"
        doomed = sorted((w for w in by_tli[tli] if w.segno is not None and w.segno < cutoff), key=_wal_order)
        runs.extend(_runs(tli, doomed, reason))
    return tuple(runs)


def _wal_order(wal: WalName) -> tuple[int, str]:
    return (wal.segno or 0, wal.name)


def _runs(tli: int, doomed: list[WalName], reason: str) -> list[WalExpiry]:
    """Group files into runs of consecutive segment numbers (.partial/.backup files join their segment)."""
    runs: list[list[WalName]] = []
    for wal in doomed:
        if runs and wal.segno is not None and runs[-1][-1].segno is not None and wal.segno <= runs[-1][-1].segno + 1:
            runs[-1].append(wal)
        else:
            runs.append([wal])
    return [WalExpiry(tli, run[0].name, run[-1].name, tuple(w.name for w in run), reason) for run in runs]


def resolve_tz(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, str):
        return ZoneInfo(tz)
    return tz


def plan(
    policy: RetentionPolicy,
    backups: Iterable[Any],
    dumps: Iterable[Any] = (),
    wal_segments: Iterable[str | WalName] = (),
    now: datetime | None = None,
    tz: str | tzinfo | None = None,
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> RetentionPlan:
    """Decide keep/delete for every backup and dump, and which WAL files go. Pure; `now` must be aware."""
    if now is None:
        raise UsageError("retention plan needs the current time")
    now = _as_datetime(now, "now")
    zone = resolve_tz(tz)
    backup_items = [b if isinstance(b, Item) else item_from_record(b, segment_size) for b in backups]
    dump_items = [d if isinstance(d, Item) else item_from_record(d, segment_size) for d in dumps]
    backup_decisions = keep_chains(
        _decide(backup_items, policy.backup_rules(), policy.min_age, now, zone), backup_items
    )
    dump_decisions = _decide(dump_items, policy.dump_rules(), policy.min_age, now, zone)
    kept_ids = {d.id for d in backup_decisions if d.keep}
    retained = [i for i in backup_items if i.id in kept_ids]
    # an incomplete record gives no recovery start point, so it never anchors WAL (nor holds it back)
    wal = wal_expiry([i for i in retained if i.complete], wal_segments, segment_size)
    return RetentionPlan(now=now, backups=backup_decisions, dumps=dump_decisions, wal=wal)
