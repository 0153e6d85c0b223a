"""Retention planning with backups at controlled times: each rule, their union, the safety rules, WAL expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from opsdb.model.lsn import Lsn, segment_name
from opsdb.model.retention import Item, RetentionPolicy, item_from_record, plan, recent_periods

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # a Saturday
NO_MIN_AGE = timedelta(0)


def daily_backups(days: int, hour: int = 2, now: datetime = NOW) -> list[Item]:
    """One backup a day at `hour` UTC for the last `days` days (today included), newest last; segments grow."""
    first = (now - timedelta(days=days - 1)).replace(hour=hour, minute=0)
    items = []
    for n in range(days):
        start = first + timedelta(days=n)
        items.append(Item(f"b{n:03d}", start, start + timedelta(minutes=30), True, 1, 10 * n + 5))
    return [i for i in items if i.stop_time <= now]


def kept(p, kind="backups") -> list[str]:
    return [d.id for d in getattr(p, kind) if d.keep]


def rules_of(p, backup_id) -> tuple[str, ...]:
    return next(d.rules for d in p.backups if d.id == backup_id)


def test_keep_last_keeps_the_newest_n():
    backups = daily_backups(10)
    p = plan(RetentionPolicy(keep_last=3, min_age=NO_MIN_AGE), backups, now=NOW)
    assert kept(p) == [b.id for b in backups[-3:]]
    assert p.backups_to_delete == [b.id for b in backups[:-3]]
    assert rules_of(p, backups[0].id) == ("expired",)
    assert "keep_last" in rules_of(p, backups[-1].id) and "newest" in rules_of(p, backups[-1].id)


def test_window_keeps_the_backup_before_the_window_start_and_everything_after():
    backups = daily_backups(10)  # stops at 02:30 on each of the last 10 days
    p = plan(RetentionPolicy(window=timedelta(days=3), min_age=NO_MIN_AGE), backups, now=NOW)
    window_start = NOW - timedelta(days=3)  # 2026-11-18 12:00
    kept_items = [b for b in backups if b.id in kept(p)]
    assert kept_items[0].stop_time <= window_start < kept_items[1].stop_time
    assert [b.id for b in kept_items] == [b.id for b in backups if b.stop_time > window_start - timedelta(days=1)]
    assert all("window" in rules_of(p, b.id) for b in kept_items)


def test_window_longer_than_history_keeps_everything():
    backups = daily_backups(5)
    p = plan(RetentionPolicy(window=timedelta(days=30), min_age=NO_MIN_AGE), backups, now=NOW)
    assert kept(p) == [b.id for b in backups]


def test_daily_keeps_the_newest_of_each_of_the_last_n_days():
    start = NOW - timedelta(days=5)
    backups = [
        Item(f"b{h:03d}", start + timedelta(hours=h), start + timedelta(hours=h, minutes=5)) for h in range(0, 120, 6)
    ]
    p = plan(RetentionPolicy(daily=3, min_age=NO_MIN_AGE), backups, now=NOW)
    kept_items = [b for b in backups if b.id in kept(p)]
    days = {b.stop_time.date() for b in kept_items}
    assert days == {NOW.date(), NOW.date() - timedelta(days=1), NOW.date() - timedelta(days=2)}
    for b in kept_items:  # each is the newest of its day
        assert all(o.stop_time <= b.stop_time for o in backups if o.stop_time.date() == b.stop_time.date())
    assert all(rules_of(p, b.id)[0] in ("daily", "newest") for b in kept_items)


def test_gfs_days_follow_the_cluster_timezone():
    # 23:30 UTC on Nov 20 is already Nov 21 in Berlin: in UTC it is Nov 20's newest, in Berlin it is Nov 21's.
    late = Item("late", datetime(2026, 11, 20, 23, 0, tzinfo=UTC), datetime(2026, 11, 20, 23, 30, tzinfo=UTC))
    early = Item("early", datetime(2026, 11, 20, 20, 0, tzinfo=UTC), datetime(2026, 11, 20, 20, 30, tzinfo=UTC))
    newest = Item("newest", datetime(2026, 11, 21, 10, 0, tzinfo=UTC), datetime(2026, 11, 21, 10, 30, tzinfo=UTC))
    policy = RetentionPolicy(daily=2, min_age=NO_MIN_AGE)
    assert kept(plan(policy, [early, late, newest], now=NOW, tz="UTC")) == ["late", "newest"]
    # Berlin: Nov 21 holds late and newest (newest wins); Nov 20 holds early.
    assert kept(plan(policy, [early, late, newest], now=NOW, tz="Europe/Berlin")) == ["early", "newest"]


def test_weekly_monthly_yearly():
    # one backup every day for ~3 years
    backups = daily_backups(3 * 365 + 30)
    policy = RetentionPolicy(weekly=4, monthly=6, yearly=3, min_age=NO_MIN_AGE)
    p = plan(policy, backups, now=NOW)
    by_rule: dict[str, list[str]] = {}
    for d in p.backups:
        for r in d.rules:
            by_rule.setdefault(r, []).append(d.id)
    assert len(by_rule["weekly"]) == 4 and len(by_rule["monthly"]) == 6 and len(by_rule["yearly"]) == 3
    stop = {b.id: b.stop_time for b in backups}
    # monthly picks are the last day of each month (the newest), except the current month (today)
    month_ends = sorted(stop[i] for i in by_rule["monthly"])
    assert month_ends[-1].date() == NOW.date()
    assert [(d.month, d.day) for d in month_ends[:-1]] == [(6, 30), (7, 31), (8, 31), (9, 30), (10, 31)]
    # weekly picks are Sundays except the current week's (today, a Saturday)
    week_picks = sorted(stop[i] for i in by_rule["weekly"])
    assert [d.weekday() for d in week_picks] == [6, 6, 6, 5]
    assert sorted(stop[i].year for i in by_rule["yearly"]) == [2024, 2025, 2026]
    assert len(kept(p)) == len(set(by_rule["weekly"]) | set(by_rule["monthly"]) | set(by_rule["yearly"]))


def test_union_of_rules():
    backups = daily_backups(60)
    parts = [
        RetentionPolicy(keep_last=2, min_age=NO_MIN_AGE),
        RetentionPolicy(window=timedelta(days=5), min_age=NO_MIN_AGE),
        RetentionPolicy(weekly=3, min_age=NO_MIN_AGE),
        RetentionPolicy(monthly=2, min_age=NO_MIN_AGE),
    ]
    union = set().union(*(set(kept(plan(part, backups, now=NOW))) for part in parts))
    combined = RetentionPolicy(keep_last=2, window=timedelta(days=5), weekly=3, monthly=2, min_age=NO_MIN_AGE)
    p = plan(combined, backups, now=NOW)
    assert set(kept(p)) == union
    assert len(union) < len(backups)
    # a backup kept by two rules names both
    assert {"keep_last", "window", "weekly", "monthly", "newest"} <= set(rules_of(p, backups[-1].id))


def test_newest_complete_backup_is_never_deleted():
    old = Item("old", NOW - timedelta(days=400), NOW - timedelta(days=400) + timedelta(minutes=5))
    p = plan(RetentionPolicy(daily=1, min_age=NO_MIN_AGE), [old], now=NOW)
    assert kept(p) == ["old"] and rules_of(p, "old") == ("newest",)


def test_incomplete_records_are_left_alone_and_do_not_count_as_newest():
    good = Item("good", NOW - timedelta(days=10), NOW - timedelta(days=10) + timedelta(minutes=5))
    broken = Item("broken", NOW - timedelta(days=2), NOW - timedelta(days=2), complete=False)
    p = plan(RetentionPolicy(keep_last=1, min_age=NO_MIN_AGE), [good, broken], now=NOW)
    assert rules_of(p, "good") == ("newest", "keep_last")
    assert rules_of(p, "broken") == ("not_complete",)


def test_min_age_protects_young_backups():
    backups = daily_backups(5) + [Item("fresh1", NOW - timedelta(minutes=50), NOW - timedelta(minutes=40))]
    backups.append(Item("fresh2", NOW - timedelta(minutes=20), NOW - timedelta(minutes=10)))
    p = plan(RetentionPolicy(keep_last=1, min_age=timedelta(hours=1)), backups, now=NOW)
    assert kept(p) == ["fresh1", "fresh2"]
    assert rules_of(p, "fresh1") == ("min_age",)


def test_no_rules_keeps_everything():
    backups = daily_backups(5)
    p = plan(RetentionPolicy(min_age=NO_MIN_AGE), backups, now=NOW)
    assert p.backups_to_delete == []
    assert all("no_policy" in d.rules for d in p.backups)


def test_dumps_have_their_own_rules():
    dumps = daily_backups(10)
    p = plan(RetentionPolicy(keep_last=1, dumps_keep_last=4, min_age=NO_MIN_AGE), [], dumps, now=NOW)
    assert kept(p, "dumps") == [d.id for d in dumps[-4:]]
    p = plan(RetentionPolicy(dumps_daily=2, dumps_monthly=1, min_age=NO_MIN_AGE), [], dumps, now=NOW)
    assert kept(p, "dumps") == [d.id for d in dumps[-2:]]


def test_records_from_catalog_dicts():
    record = {
        "id": "20261121T020000Z",
        "kind": "physical",
        "status": "complete",
        "start_time": "2026-11-21T02:00:00Z",
        "stop_time": "2026-11-21T02:30:00+00:00",
        "start_lsn": "0/5000028",
        "timeline": 1,
    }
    item = item_from_record(record)
    assert item.start_segment == Lsn.parse("0/5000028").segment_number() == 5
    assert item.stop_time == datetime(2026, 11, 21, 2, 30, tzinfo=UTC)
    with pytest.raises(Exception, match="no UTC offset"):
        item_from_record({**record, "start_time": "2026-11-21T02:00:00"})


def test_recent_periods_cross_year_boundaries():
    jan = datetime(2026, 1, 15, tzinfo=UTC)
    months = sorted(recent_periods(jan, "monthly", 3, UTC))
    assert [(m.year, m.month) for m in months] == [(2025, 11), (2025, 12), (2026, 1)]
    tz = ZoneInfo("Pacific/Auckland")
    assert recent_periods(datetime(2026, 12, 31, 12, 0, tzinfo=UTC), "yearly", 1, tz) == {datetime(2027, 1, 1).date()}


# --- WAL expiry ---------------------------------------------------------------------------------


def wal(tli: int, first: int, last: int) -> list[str]:
    return [segment_name(tli, n) for n in range(first, last + 1)]


def test_wal_older_than_the_oldest_retained_backup_goes_history_stays():
    backups = daily_backups(5)  # start segments 5, 15, 25, 35, 45 on timeline 1
    names = wal(1, 0, 60) + ["00000002.history", segment_name(1, 14) + ".00000028.backup"]
    p = plan(RetentionPolicy(keep_last=2, min_age=NO_MIN_AGE), backups, wal_segments=names, now=NOW)
    oldest_kept = backups[-2]
    assert oldest_kept.start_segment == 35
    deleted = p.wal_to_delete
    assert deleted == wal(1, 0, 34)[:14] + [segment_name(1, 14), segment_name(1, 14) + ".00000028.backup"] + wal(
        1, 15, 34
    )
    assert "00000002.history" not in deleted
    assert all(n not in deleted for n in wal(1, 35, 60))
    assert len(p.wal) == 1 and p.wal[0].first == segment_name(1, 0) and p.wal[0].last == segment_name(1, 34)
    assert backups[-2].id in p.wal[0].reason


def test_wal_expiry_per_timeline():
    b1 = Item("tl1", NOW - timedelta(days=3), NOW - timedelta(days=3), True, 1, 10)
    b2 = Item("tl2", NOW - timedelta(days=1), NOW - timedelta(days=1), True, 2, 30)
    names = wal(1, 0, 25) + wal(2, 20, 40) + wal(3, 35, 50)
    # both kept: TL1 keeps from 10, TL2 and TL3 keep from 10 (they may descend from TL1's backup)
    p = plan(RetentionPolicy(keep_last=2, min_age=NO_MIN_AGE), [b1, b2], wal_segments=names, now=NOW)
    assert p.wal_to_delete == wal(1, 0, 9)
    # only the TL2 backup kept: all of TL1 goes, TL2 below 30 goes, TL3 below 30 (none there) goes
    p = plan(RetentionPolicy(keep_last=1, min_age=NO_MIN_AGE), [b1, b2], wal_segments=names, now=NOW)
    assert p.wal_to_delete == wal(1, 0, 25) + wal(2, 20, 29)
    assert "older than every retained backup" in p.wal[0].reason


def test_no_wal_is_deleted_without_a_retained_physical_backup():
    p = plan(RetentionPolicy(keep_last=1, min_age=NO_MIN_AGE), [], wal_segments=wal(1, 0, 9), now=NOW)
    assert p.wal == ()


def test_gaps_make_separate_runs():
    backups = [Item("b", NOW - timedelta(days=1), NOW - timedelta(days=1), True, 1, 100)]
    p = plan(
        RetentionPolicy(keep_last=1, min_age=NO_MIN_AGE), backups, wal_segments=wal(1, 0, 3) + wal(1, 7, 9), now=NOW
    )
    assert [(r.first, r.last) for r in p.wal] == [
        (segment_name(1, 0), segment_name(1, 3)),
        (segment_name(1, 7), segment_name(1, 9)),
    ]


def test_plan_to_dict_is_json_shaped():
    p = plan(RetentionPolicy(keep_last=1, min_age=NO_MIN_AGE), daily_backups(3), wal_segments=wal(1, 0, 30), now=NOW)
    doc = p.to_dict()
    assert doc["summary"] == {
        "backups_deleted": 2,
        "backups_kept": 1,
        "dumps_deleted": 0,
        "dumps_kept": 0,
        "wal_files_deleted": 25,
    }
    assert doc["backups"][0]["action"] == "delete" and doc["backups"][0]["rules"] == ["expired"]
