"""Restore guards without a server: gap refusal and --accept-gap, the window's end read from WAL records,
pg_waldump output, watching a server through its log, catalog ids, and the drill's replay check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsdb.errors import IntegrityError, OperationFailed, UsageError
from opsdb.model.lsn import Lsn, segment_name
from opsdb.model.report import FAIL, PASS
from opsdb.model.window import RecoveryEnd
from opsdb.ops.proof import drill_checks
from opsdb.ops.recovery import pitr
from opsdb.ops.recovery.pitr_wait import state_from_log, wait_for_target
from opsdb.ops.recovery.restore_start import check_reached_planned_end, login_conninfo
from opsdb.pg.waldump import parse_records
from opsdb.repo import catalog, envelope, layout
from opsdb.storage.memory import MemoryStorage
from tests.unit.test_catalog_restore_plan import CODEC, physical
from tests.unit.test_target_pitr import BACKUP, T0, make_scan, target

GAP = make_scan({(1, n): n * 10 for n in (2, 3, 5, 6)})  # segment 4 missing, the archive resumes at 5


def ends_at(lsn: str, minutes: float | None) -> Any:
    when = T0 + timedelta(minutes=minutes) if minutes is not None else None
    return lambda names: RecoveryEnd(Lsn.parse(lsn), when, "COMMIT")


# --- gaps -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts", [{}, {"to_xid": "900"}, {"to_name": "rp"}, {"to_lsn": "0/5800000"}])
def test_a_target_that_needs_wal_beyond_a_gap_is_refused(opts):
    with pytest.raises(pitr.GapRefused) as err:
        pitr.plan_recovery(target(**opts), [BACKUP], GAP)
    text = str(err.value) + (err.value.hint or "")
    assert segment_name(1, 4) in text and segment_name(1, 5) in text and "--accept-gap" in text
    assert err.value.exit_code == 2


def test_the_default_restore_refuses_a_gap_too():
    with pytest.raises(pitr.GapRefused):
        pitr.plan_for_restore(None, [BACKUP], GAP, backup_id=None, standby=False)


@pytest.mark.parametrize("opts", [{"immediate": True}, {"to_lsn": "0/3800000"}])
def test_targets_before_the_gap_need_nothing_beyond_it(opts):
    plan = pitr.plan_recovery(target(**opts), [BACKUP], GAP)
    assert plan.gap is None and plan.to_json()["gap"] is None


def test_accept_gap_plans_up_to_the_gap_and_says_so():
    plan = pitr.plan_for_restore(None, [BACKUP], GAP, backup_id=None, standby=False, accept_gap=True)
    assert plan is not None and plan.target.kind == "latest" and plan.wal_last == segment_name(1, 3)
    doc = plan.to_json()
    assert doc["gap"] == {
        "first_missing": segment_name(1, 4),
        "resumes_at": segment_name(1, 5),
        "requested": "latest",
        "accepted": True,
    }
    assert doc["reaches"]["lsn"] == "0/4000000" and "before the gap" in doc["reaches"]["how"]
    assert "WAL gap: " + segment_name(1, 4) in pitr.plan_text(doc)


def test_an_accepted_gap_turns_a_later_time_target_into_the_end_before_the_gap():
    plan = pitr.plan_recovery(target(to_time=(T0 + timedelta(minutes=55)).isoformat()), [BACKUP], GAP, accept_gap=True)
    assert plan.target.kind == "latest" and plan.gap is not None and plan.gap.requested.startswith("time=")


# --- the window ends at the last commit -----------------------------------------------------------

CONTIGUOUS = make_scan({(1, n): n * 10 for n in range(2, 8)})


def test_a_time_after_the_last_commit_is_refused_with_the_real_end():
    with pytest.raises(UsageError) as err:
        pitr.plan_recovery(
            target(to_time=(T0 + timedelta(minutes=65)).isoformat()),
            [BACKUP],
            CONTIGUOUS,
            read_end=ends_at("0/7000120", 60),
        )
    assert "last commit or abort in it: 2026-11-21T09:00:00Z" in str(err.value)
    assert "--latest" in (err.value.hint or "")
    # the archive's upload time (70 minutes) would have accepted it
    pitr.plan_recovery(target(to_time=(T0 + timedelta(minutes=65)).isoformat()), [BACKUP], CONTIGUOUS)


def test_an_lsn_after_the_last_record_is_refused_and_latest_reaches_it():
    with pytest.raises(UsageError, match="last record in it starts at 0/7000120"):
        pitr.plan_recovery(target(to_lsn="0/7000200"), [BACKUP], CONTIGUOUS, read_end=ends_at("0/7000120", 60))
    plan = pitr.plan_recovery(target(), [BACKUP], CONTIGUOUS, read_end=ends_at("0/7000120", 60))
    assert plan.to_json()["window"]["end_from"] == "records"
    assert plan.reaches() == {
        "lsn": "0/7000120",
        "time": "2026-11-21T09:00:00Z",
        "how": "the end of the archived WAL: its last record and last commit",
    }


def test_no_commit_after_the_backup_refuses_every_time_target():
    with pytest.raises(UsageError, match="none found"):
        pitr.plan_recovery(
            target(to_time=(T0 + timedelta(minutes=5)).isoformat()),
            [BACKUP],
            CONTIGUOUS,
            read_end=ends_at("0/7000120", None),
        )


WALDUMP = """\
rmgr: Heap        len (rec/tot):     59/    59, tx:        745, lsn: 0/030000A0, prev 0/03000028, desc: INSERT off 2 flags 0x00, blkref #0: rel 1663/5/16384 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        745, lsn: 0/030000E0, prev 0/030000A0, desc: COMMIT 2026-12-05 02:47:29.608583 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        746, lsn: 0/03000108, prev 0/030000E0, desc: ABORT 2026-12-05 02:47:30.000001 UTC
rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/03000130, prev 0/03000108, desc: SWITCH
"""


def test_pg_waldump_records():
    found = parse_records(WALDUMP + "pg_waldump: error: error in WAL record at 0/3000130: invalid record length\n")
    assert found.last_lsn == Lsn.parse("0/3000130")
    assert found.last_stop_time == datetime(2026, 12, 5, 2, 47, 30, 1, tzinfo=UTC)
    assert (
        found.last_stop_record is not None
        and found.last_stop_record.startswith("ABORT")
        and "tx 746" in found.last_stop_record
    )
    assert parse_records("").last_lsn is None


# --- watching the server --------------------------------------------------------------------------


def test_state_from_the_log_alone():
    assert state_from_log("LOG:  database system is ready to accept read-only connections\n", standby=False) is None
    assert state_from_log("LOG:  database system is ready to accept connections\n", standby=False) == "promoted"
    assert state_from_log("LOG:  pausing at the end of recovery\n", standby=False) == "paused"
    assert (
        state_from_log("LOG:  database system is ready to accept read-only connections\n", standby=True) == "streaming"
    )


def test_a_server_that_refuses_the_login_is_seen_promoting_in_its_log():
    class LoginRefused(Exception):
        sqlstate = "28P01"

    asked = []

    def query(sql):
        asked.append(sql)
        raise LoginRefused('password authentication failed for user "postgres"')

    logs = iter(
        ["LOG:  redo starts at 0/2000028\n"] * 3
        + ["LOG:  redo done at 0/3004208\nLOG:  database system is ready to accept connections\n"] * 10
    )
    point = wait_for_target(
        action="promote",
        standby=False,
        query=query,
        is_running=lambda: True,
        read_log=lambda: next(logs),
        timeout=60,
        sleep=lambda s: None,
    )
    assert point.state == "promoted" and point.lsn == Lsn.parse("0/3004208")
    assert len(asked) == 1  # an authentication failure is not retried


def test_a_dead_server_fails_with_its_fatal_line_and_the_window():
    with pytest.raises(OperationFailed) as err:
        wait_for_target(
            action="promote",
            standby=False,
            query=lambda s: True,
            is_running=lambda: False,
            read_log=lambda: "FATAL:  recovery ended before configured recovery target was reached\n",
            timeout=10,
            sleep=lambda s: None,
            window="A .. B",
        )
    assert "recovery ended before configured recovery target was reached" in str(err.value)
    assert "A .. B" in str(err.value) and "restore --latest" in (err.value.hint or "")


def test_login_uses_the_private_socket_and_the_conninfo_credentials(tmp_path):
    text = login_conninfo(tmp_path, 5433, "host=db port=5432 user=app password=s3cret dbname=x", "postgres")
    assert f"host={tmp_path}" in text and "user=app" in text and "password=s3cret" in text and "db " not in text
    assert "user=postgres" in login_conninfo(tmp_path, 5433, None, "postgres")


def test_a_promotion_short_of_the_planned_end_fails(tmp_path):
    recovery = {"target": {"kind": "latest"}, "window": {"end_from": "records"}, "reaches": {"lsn": "0/7000120"}}
    with pytest.raises(OperationFailed, match="short of the end of the archived WAL"):
        check_reached_planned_end(recovery, {"lsn": "0/5000000", "state": "promoted"}, tmp_path / "log")
    check_reached_planned_end(recovery, {"lsn": "0/7000158", "state": "promoted"}, tmp_path / "log")


# --- catalog ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [True, False])
def test_a_catalog_entry_under_another_id_is_refused_and_never_listed(bound):
    """Bound entries (envelope 3) fail their identity check; older unbound ones the record's own id."""
    storage = MemoryStorage()
    record = physical()
    catalog.commit(storage, record, CODEC)
    other = "20261121T101501Z-F"
    if bound:
        data = storage.open(layout.catalog_entry("main", record.id)).read()
        storage.put(layout.catalog_entry("main", other), [data])
        says = f"it is catalog {record.id} of cluster 'main', expected catalog {other}"
    else:
        body = json.dumps(record.to_dict()).encode()
        envelope.put_object(storage, layout.catalog_entry("main", other), [body], CODEC, bind=False)
        says = f"named {other} but holds backup {record.id}"
    with pytest.raises(IntegrityError, match=says):
        catalog.load_backup(storage, "main", other, {})
    with pytest.raises(IntegrityError):
        catalog.list_backups(storage, "main", {})
    assert [r.id for r in catalog.list_backups(storage, "main", {}, skip_unreadable=True)] == [record.id]


# --- drills ---------------------------------------------------------------------------------------


def test_the_drill_replay_check():
    end = Lsn.parse("0/7000120")
    assert drill_checks.replay_reached(end, "0/7000158", "latest", "").status == PASS
    short = drill_checks.replay_reached(end, "0/5000000", "latest", "")
    assert short.status == FAIL and "short of the end of the archived WAL" in short.detail
    assert drill_checks.replay_reached(None, None, "time", "").status == FAIL
    stopped = "LOG:  recovery stopping before commit of transaction 9, time 2026-12-05 02:47:29+00\n"
    assert drill_checks.replay_reached(None, None, "time", stopped).status == PASS
