"""ops/recovery/pitr.py: planning refusals (exit 2 with the window), recovery settings, log parsing, waiting."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from opsdb.errors import OperationFailed, UsageError
from opsdb.model.lsn import HistoryEntry, Lsn, contiguous_ranges, parse_wal_name, segment_name
from opsdb.model.target import RecoveryTarget
from opsdb.ops.recovery import pitr
from opsdb.repo.wal import ArchiveScan

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


@dataclasses.dataclass
class B:
    id: str
    start_lsn: Lsn
    stop_lsn: Lsn
    stop_time: datetime
    timeline: int = 1
    kind: str = "physical"
    status: str = "complete"
    stored_bytes: int = 1000
    wal_included: bool = False


def make_scan(segments, histories=None):
    """segments: {(tli, segno): minutes after T0 of the upload}"""
    times = {k: (T0 + timedelta(minutes=m)).timestamp() for k, m in segments.items()}
    names = [parse_wal_name(segment_name(t, s)) for t, s in segments]
    return ArchiveScan(
        segments=times,
        sizes={k: 100 for k in segments},
        ranges=contiguous_ranges(names),
        histories=histories or {},
        partials=[],
        backup_labels=[],
        stored_bytes=100 * len(segments),
    )


BACKUP = B("b1", Lsn.parse("0/2000028"), Lsn.parse("0/2000138"), T0 + timedelta(minutes=1))


def target(**kw):
    return RecoveryTarget.from_options(**kw)


def test_plan_inside_window():
    scan = make_scan({(1, n): n * 10 for n in range(2, 8)})
    plan = pitr.plan_recovery(target(to_time=(T0 + timedelta(minutes=35)).isoformat()), [BACKUP], scan)
    assert plan.backup.id == "b1" and plan.timeline == 1
    assert (plan.wal_first, plan.wal_last, plan.wal_segments) == (segment_name(1, 2), segment_name(1, 7), 6)
    assert plan.bytes_to_read == 1000 + 600
    doc = plan.to_json()
    assert doc["target"]["value"] == "2026-11-21T08:35:00Z" and doc["window"]["to_lsn"] == "0/8000000"


@pytest.mark.parametrize(
    "opts,message",
    [
        ({"to_time": (T0 + timedelta(hours=5)).isoformat()}, "after the newest archived WAL"),
        ({"to_time": (T0 - timedelta(hours=1)).isoformat()}, "no backup ends before"),
        ({"to_lsn": "0/9000000"}, "after the newest archived WAL"),
        ({"to_lsn": "0/1000000"}, "no backup ends before"),
        ({"timeline": "3"}, "timeline 3 is not in the archive"),
    ],
)
def test_plan_refusals_are_usage_errors(opts, message):
    scan = make_scan({(1, n): n * 10 for n in range(2, 8)})
    with pytest.raises(UsageError, match=message):
        pitr.plan_recovery(target(**opts), [BACKUP], scan)


def test_gap_refusal_names_the_window_and_the_missing_segment():
    scan = make_scan({(1, n): n * 10 for n in (2, 3, 5, 6)})
    with pytest.raises(UsageError) as err:
        pitr.plan_recovery(target(to_time=(T0 + timedelta(minutes=55)).isoformat()), [BACKUP], scan)
    text = str(err.value)
    assert "0/2000138" in text and "0/4000000" in text and segment_name(1, 4) in text
    assert err.value.exit_code == 2


def test_latest_timeline_follows_history_and_uses_new_segments():
    history = {2: [HistoryEntry(1, Lsn.parse("0/5000100"), "")]}
    scan = make_scan({**{(1, n): n for n in range(2, 6)}, (2, 5): 50, (2, 6): 60}, history)
    plan = pitr.plan_recovery(target(), [BACKUP], scan)
    assert plan.timeline == 2 and plan.wal_last == segment_name(2, 6)
    assert pitr.plan_recovery(target(timeline="current"), [BACKUP], scan).wal_last == segment_name(1, 5)


def test_backup_with_its_own_wal_needs_archive_only_after_stop():
    b = dataclasses.replace(BACKUP, wal_included=True)
    plan = pitr.plan_recovery(target(immediate=True), [b], make_scan({}))
    assert plan.wal_segments <= 1


def test_recovery_settings_clear_other_targets():
    s = pitr.recovery_settings(target(to_name="before_drop"), "opsdb wal-fetch %f %p", timeline=2)
    assert s["recovery_target_name"] == "before_drop" and "recovery_target_time" not in s
    assert s["recovery_target_timeline"] == "2" and s["recovery_target_action"] == "promote"
    standby = pitr.recovery_settings(target(), "x", standby=True, primary_conninfo="host=p", slot="s1")
    assert standby["primary_conninfo"] == "host=p" and standby["primary_slot_name"] == "s1"
    assert standby["recovery_target_timeline"] == "latest" and "recovery_target_action" not in standby
    assert pitr.recovery_settings(target(), "x", archive=False)["archive_mode"] == "off"


def test_restore_command_is_absolute_and_quoted():
    cmd = pitr.restore_command("/opt/my venv/bin/opsdb", "/etc/opsdb/opsdb.toml", "main")
    assert cmd == '\'/opt/my venv/bin/opsdb\' --config /etc/opsdb/opsdb.toml --cluster main wal-fetch "%f" "%p"'


LOG = """LOG:  starting point-in-time recovery to 2026-11-21 08:35:00+00
LOG:  recovery stopping before commit of transaction 745, time 2026-11-21 08:36:00.5+00
LOG:  redo done at 0/5000100 system usage: CPU: user: 0.00 s
LOG:  last completed transaction was at log time 2026-11-21 08:34:00.25+00
LOG:  selected new timeline ID: 2
"""


def test_parse_log():
    found = pitr.parse_log(LOG)
    assert found["last_commit"] == datetime(2026, 11, 21, 8, 34, 0, 250000, tzinfo=UTC)
    assert found["timeline"] == 2 and found["stop_line"].startswith(
        "recovery stopping before commit of transaction 745"
    )


def test_wait_for_promotion_reads_point():
    answers = iter([True, "not paused", False])
    values = {
        "SELECT pg_last_xact_replay_timestamp()": datetime(2026, 11, 21, 8, 34, tzinfo=UTC),
        "SELECT pg_last_wal_replay_lsn()::text": "0/5000100",
        "SELECT timeline_id FROM pg_control_checkpoint()": 1,
    }

    def query(sql):
        if sql in values:
            return values[sql]
        return next(answers)

    point = pitr.wait_for_target(
        action="promote",
        standby=False,
        query=query,
        is_running=lambda: True,
        read_log=lambda: LOG,
        timeout=10,
        sleep=lambda s: None,
    )
    assert point.state == "promoted" and point.lsn == Lsn.parse("0/5000100") and point.timeline == 2
    assert point.to_json()["time"] == "2026-11-21T08:34:00Z"


def test_wait_reports_the_fatal_line_when_the_server_dies():
    with pytest.raises(OperationFailed, match="recovery ended before configured recovery target"):
        pitr.wait_for_target(
            action="promote",
            standby=False,
            query=lambda s: True,
            is_running=lambda: False,
            read_log=lambda: "FATAL:  recovery ended before configured recovery target was reached\n",
            timeout=10,
            sleep=lambda s: None,
        )


def test_wait_is_bounded():
    ticks = iter(range(100))
    with pytest.raises(OperationFailed, match="within 5 s"):
        pitr.wait_for_target(
            action="promote",
            standby=False,
            query=lambda s: True,
            is_running=lambda: True,
            read_log=lambda: "",
            timeout=5,
            sleep=lambda s: None,
            clock=lambda: next(ticks),
        )
