"""model/target.py and model/window.py: target parsing, backup choice, recoverable windows."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from opsdb.errors import UsageError
from opsdb.model.lsn import HistoryEntry, Lsn
from opsdb.model.target import RecoveryTarget, choose_backup, parse_time
from opsdb.model.window import timeline_of_segment, timeline_window, walk

SEG = 16 * 1024 * 1024


def test_time_needs_an_offset_with_a_hint():
    with pytest.raises(UsageError) as err:
        parse_time("2026-11-21T10:15:00")
    assert "offset" in str(err.value) and "Z" in err.value.hint


@pytest.mark.parametrize(
    "text,utc",
    [
        ("2026-11-21T10:15:00+01:00", datetime(2026, 11, 21, 9, 15, tzinfo=UTC)),
        ("2026-11-21T09:15:00Z", datetime(2026, 11, 21, 9, 15, tzinfo=UTC)),
        ("2026-11-21 09:15:00.5+00:00", datetime(2026, 11, 21, 9, 15, 0, 500000, tzinfo=UTC)),
    ],
)
def test_time_with_offset(text, utc):
    assert parse_time(text) == utc


def test_one_target_only_and_settings():
    with pytest.raises(UsageError, match="one recovery target"):
        RecoveryTarget.from_options(to_time="2026-11-21T09:15:00Z", to_lsn="0/1")
    t = RecoveryTarget.from_options(to_time="2026-11-21T10:15:00+01:00", timeline="2", action="pause")
    s = t.recovery_settings()
    assert s["recovery_target_time"] == "2026-11-21 09:15:00.000000+00"
    assert s["recovery_target_timeline"] == "2" and s["recovery_target_action"] == "pause"
    assert RecoveryTarget.from_options().kind == "latest"
    assert RecoveryTarget.from_options(immediate=True).recovery_settings()["recovery_target"] == "immediate"
    assert RecoveryTarget.from_options(to_lsn="0/3000060").to_json()["value"] == "0/3000060"


@pytest.mark.parametrize(
    "opts",
    [
        {"to_xid": "abc"},
        {"to_lsn": "zz"},
        {"timeline": "0"},
        {"timeline": "newest"},
        {"action": "explode"},
        {"to_name": ""},
    ],
)
def test_bad_options_are_usage_errors(opts):
    with pytest.raises(UsageError):
        RecoveryTarget.from_options(**opts)


@dataclasses.dataclass
class B:
    id: str
    start_lsn: str
    stop_lsn: str
    stop_time: datetime
    timeline: int = 1
    kind: str = "physical"
    status: str = "complete"


T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
BACKUPS = [
    B("b1", "0/2000028", "0/2000100", T0),
    B("b2", "0/5000028", "0/5000100", T0 + timedelta(hours=1)),
    B("bad", "0/6000028", "0/6000100", T0 + timedelta(hours=2), status="running"),
]


def test_choose_newest_backup_ending_before_target():
    at = lambda h: RecoveryTarget.from_options(to_time=(T0 + timedelta(hours=h)).isoformat())  # noqa: E731
    assert choose_backup(at(0.5), BACKUPS).id == "b1"
    assert choose_backup(at(3), BACKUPS).id == "b2"  # the running one never counts
    with pytest.raises(UsageError, match="no backup ends before"):
        choose_backup(at(-1), BACKUPS)
    assert choose_backup(RecoveryTarget.from_options(to_lsn="0/4000000"), BACKUPS).id == "b1"
    assert choose_backup(RecoveryTarget.from_options(), BACKUPS).id == "b2"
    assert choose_backup(RecoveryTarget.from_options(to_name="x"), BACKUPS).id == "b1"


def test_walk_stops_at_first_gap_and_follows_timeline_switch():
    archived = {(1, n): 100.0 + n for n in (2, 3, 4, 5)} | {(1, 7): 1.0}
    w = walk(2, 1, [], archived)
    assert (w.last_segno, w.first_missing, w.end_lsn) == (5, "000000010000000000000006", Lsn(6 * SEG))
    history = [HistoryEntry(1, Lsn.parse("0/4000100"), "")]
    assert timeline_of_segment(3, 2, history, SEG) == 1
    assert timeline_of_segment(4, 2, history, SEG) == 2
    archived2 = {(1, 2): 1.0, (1, 3): 2.0, (2, 4): 3.0, (2, 5): 4.0}
    assert walk(2, 2, history, archived2).last_segno == 5


def test_timeline_window_from_oldest_backup_to_end_of_contiguous_wal():
    archived = {(1, n): 1000.0 + n for n in range(2, 9)}
    window = timeline_window(1, BACKUPS, [], archived)
    assert window.from_lsn == Lsn.parse("0/2000100") and window.to_lsn == Lsn(9 * SEG)
    assert window.from_time == T0 and window.to_time == datetime.fromtimestamp(1008.0, UTC)
    gap = {k: v for k, v in archived.items() if k != (1, 3)}
    window = timeline_window(1, BACKUPS, [], gap)
    b1, b2 = window.usable  # b1 reaches only up to the gap
    assert b1.to_lsn == Lsn(3 * SEG) and b2.to_lsn == Lsn(9 * SEG)
