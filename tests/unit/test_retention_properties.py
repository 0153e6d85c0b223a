"""Property tests of the retention plan: safety rules hold for any backup history and policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from opsdb.model.lsn import segment_name
from opsdb.model.retention import Item, RetentionPolicy, plan

NOW = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # the night Europe switches to summer time


@st.composite
def histories(draw):
    """Backups with strictly increasing start times and start segments on one or two timelines."""
    gaps = draw(st.lists(st.integers(min_value=1, max_value=72 * 60), min_size=0, max_size=40))
    durations = draw(st.lists(st.integers(min_value=0, max_value=180), min_size=len(gaps), max_size=len(gaps)))
    switch = draw(st.integers(min_value=0, max_value=max(len(gaps), 1)))
    # anchored so the newest backup started up to two days before NOW
    origin = NOW - timedelta(minutes=sum(gaps) + draw(st.integers(min_value=0, max_value=48 * 60)))
    items, minutes, segment = [], 0, 0
    for n, (gap, duration) in enumerate(zip(gaps, durations, strict=True)):
        minutes += gap
        segment += 1 + gap // 30
        start = origin + timedelta(minutes=minutes)
        items.append(
            Item(f"b{n:03d}", start, start + timedelta(minutes=duration), True, 1 if n < switch else 2, segment)
        )
    return items


policies = st.builds(
    RetentionPolicy,
    keep_last=st.one_of(st.none(), st.integers(1, 10)),
    window=st.one_of(st.none(), st.integers(0, 60).map(lambda d: timedelta(days=d))),
    daily=st.integers(0, 10),
    weekly=st.integers(0, 6),
    monthly=st.integers(0, 4),
    yearly=st.integers(0, 2),
    min_age=st.integers(0, 48).map(lambda h: timedelta(hours=h)),
)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"])


@settings(max_examples=300, deadline=None)
@given(histories(), policies, zones)
def test_safety_rules_always_hold(backups, policy, tz):
    p = plan(policy, backups, now=NOW, tz=tz)
    assert [d.id for d in p.backups] == [b.id for b in sorted(backups, key=lambda b: b.sort_key)]
    decisions = {d.id: d for d in p.backups}
    if backups:
        newest = max(backups, key=lambda b: b.sort_key)
        assert decisions[newest.id].keep
    for b in backups:
        d = decisions[b.id]
        if NOW - b.stop_time < policy.min_age:
            assert d.keep and "min_age" in d.rules
        assert d.keep == (d.rules != ("expired",))
    if policy.keep_last:
        assert sum(d.keep for d in p.backups) >= min(policy.keep_last, len(backups))


@settings(max_examples=200, deadline=None)
@given(histories(), policies, zones)
def test_kept_set_is_the_union_of_single_rule_plans(backups, policy, tz):
    whole = {d.id for d in plan(policy, backups, now=NOW, tz=tz).backups if d.keep}
    singles = []
    for name in ("keep_last", "window", "daily", "weekly", "monthly", "yearly"):
        value = getattr(policy, name)
        if value or (name == "window" and value is not None):
            singles.append(RetentionPolicy(**{name: value, "min_age": policy.min_age}))
    if not singles:
        assert whole == {b.id for b in backups}
        return
    union = set()
    for single in singles:
        union |= {d.id for d in plan(single, backups, now=NOW, tz=tz).backups if d.keep}
    assert whole == union


@settings(max_examples=200, deadline=None)
@given(histories(), policies)
def test_window_points_stay_recoverable_and_their_wal_stays(backups, policy):
    """Any point in the window that had a backup ending before it still has one, with all WAL from its start."""
    if policy.window is None:
        return
    last_segment = max((b.start_segment for b in backups), default=0) + 5
    names = [segment_name(tli, n) for tli in (1, 2) for n in range(0, last_segment + 1)]
    p = plan(policy, backups, wal_segments=names, now=NOW)
    kept = [b for b in backups if b.id in {d.id for d in p.backups if d.keep}]
    deleted_wal = set(p.wal_to_delete)
    window_start = NOW - policy.window
    points = [window_start, NOW] + [b.stop_time + d for b in backups for d in (timedelta(0), timedelta(seconds=-1))]
    for point in points:
        if not window_start <= point <= NOW:
            continue
        if not any(b.stop_time <= point for b in backups):
            continue
        base = max((b for b in kept if b.stop_time <= point), key=lambda b: b.sort_key, default=None)
        assert base is not None, f"{point} became unrecoverable"
        needed = [
            segment_name(tli, n)
            for tli in (1, 2)
            if tli >= base.timeline
            for n in range(base.start_segment, last_segment + 1)
        ]
        assert not deleted_wal.intersection(needed)
