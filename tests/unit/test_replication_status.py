"""Replica status rules: byte and time thresholds, idle primaries, broken streams, slots, summary."""

from __future__ import annotations

import dataclasses

from opsdb.model.replication import (
    LagThresholds,
    PrimaryState,
    SlotInfo,
    StandbySample,
    Status,
    WalSender,
    evaluate_replica,
    evaluate_sender,
    evaluate_slot,
    idle_aware_lag_seconds,
    match_sender,
    summarize,
    unreachable_replica,
    worst,
)

T = LagThresholds(
    warning_bytes=1024,
    critical_bytes=4096,
    warning_seconds=60,
    critical_seconds=300,
    slot_retained_warning_bytes=10_000,
)
HEALTHY = StandbySample(
    in_recovery=True,
    receive_lsn="0/3000100",
    replay_lsn="0/3000100",
    seconds_since_replay=7200.0,  # primary idle for two hours
    replay_paused=False,
    receiver_status="streaming",
    application_name="replica1",
)


def test_idle_primary_does_not_raise_time_lag():
    r = evaluate_replica("replica1", HEALTHY, "0/3000100", T)
    assert r.status is Status.OK
    assert r.lag_seconds == 0.0 and r.lag_bytes == 0
    assert r.state == "streaming"


def test_idle_receiver_caught_up_counts_as_zero_even_if_primary_moved_on_a_little():
    assert idle_aware_lag_seconds(HEALTHY, "0/3000200") == 0.0


def test_broken_stream_keeps_the_raw_age_and_is_critical():
    sample = dataclasses.replace(HEALTHY, receiver_status=None)
    r = evaluate_replica("replica1", sample, "0/3000200", T)
    assert r.lag_seconds == 7200.0
    assert r.status is Status.CRITICAL
    assert r.state == "receiver down"
    assert any("not streaming" in x for x in r.reasons)


def test_paused_replay_behind_primary_goes_critical_by_bytes():
    sample = dataclasses.replace(HEALTHY, replay_paused=True, receive_lsn="0/3002100", seconds_since_replay=2.0)
    r = evaluate_replica("replica1", sample, "0/3002100", T)
    assert r.lag_bytes == 0x2000
    assert r.receive_lag_bytes == 0
    assert r.status is Status.CRITICAL
    assert r.state == "paused"
    assert any("replay lag 8.0 KiB >= critical 4.0 KiB" in x for x in r.reasons)


def test_warning_by_bytes_and_by_seconds():
    sample = dataclasses.replace(HEALTHY, receive_lsn="0/3000600", seconds_since_replay=1.0)
    assert evaluate_replica("r", sample, "0/3000600", T).status is Status.WARNING
    sample = dataclasses.replace(HEALTHY, receive_lsn="0/3000110", seconds_since_replay=120.0)
    r = evaluate_replica("r", sample, "0/3000110", T)
    assert r.status is Status.WARNING and r.lag_seconds == 120.0


def test_paused_without_lag_is_a_warning():
    r = evaluate_replica("r", dataclasses.replace(HEALTHY, replay_paused=True), "0/3000100", T)
    assert r.status is Status.WARNING


def test_not_in_recovery_and_unreachable_are_critical():
    r = evaluate_replica("r", dataclasses.replace(HEALTHY, in_recovery=False), "0/3000100", T)
    assert r.status is Status.CRITICAL and r.state == "not in recovery"
    u = unreachable_replica("r2", "connection refused")
    assert u.status is Status.CRITICAL and u.reasons == ("unreachable: connection refused",)
    assert u.to_dict()["state"] == "unreachable"


def test_cli_overrides_lower_critical_and_warning():
    t = T.with_overrides(512, None)
    assert t.critical_bytes == 512 and t.warning_bytes == 512 and t.critical_seconds == 300


def _sender(**kw):
    base = dict(
        application_name="replica1",
        client_addr="127.0.0.1",
        state="streaming",
        sync_state="async",
        sent_lsn="0/1",
        write_lsn="0/1",
        flush_lsn="0/1",
        replay_lsn="0/1",
        sent_lag_bytes=0,
        write_lag_bytes=0,
        flush_lag_bytes=0,
        replay_lag_bytes=0,
        write_lag_seconds=None,
        flush_lag_seconds=None,
        replay_lag_seconds=None,
    )
    base.update(kw)
    return WalSender(**base)


def test_sender_null_lag_when_caught_up_is_zero():
    s = evaluate_sender(_sender(), T)
    assert s.status is Status.OK and s.replay_lag_seconds == 0.0
    s = evaluate_sender(_sender(state="catchup", replay_lag_bytes=5000), T)
    assert s.status is Status.CRITICAL
    assert match_sender(HEALTHY, (s,)) is s
    assert match_sender(HEALTHY, (s, s)) is None


def test_slots():
    slot = SlotInfo("s1", "physical", None, False, "reserved", 20_000, None)
    evaluated = evaluate_slot(slot, T)
    assert evaluated.status is Status.WARNING
    assert any("inactive, retaining" in r for r in evaluated.reasons)
    small = evaluate_slot(dataclasses.replace(slot, retained_bytes=100), T)
    assert small.status is Status.OK and small.reasons  # reported, not alarmed
    assert evaluate_slot(dataclasses.replace(slot, wal_status="lost"), T).status is Status.CRITICAL
    assert evaluate_slot(dataclasses.replace(slot, active=True, retained_bytes=0), T).reasons == ()


def test_summary_and_json_shape():
    primary = PrimaryState(False, "0/3000100", 150000)
    r = evaluate_replica("replica1", HEALTHY, "0/3000100", T)
    report = summarize(None, primary, (r,), (), (), T)
    doc = report.to_dict()
    assert doc["status"] == "OK" and report.exit_code == 0
    assert {"name", "state", "lag_bytes", "lag_seconds"} <= set(doc["replicas"][0])
    assert doc["slots"] == []
    down = summarize(None, primary, (r, unreachable_replica("r2", "timeout")), (), (), T)
    assert down.status is Status.CRITICAL and "r2: unreachable: timeout" in down.summary
    assert summarize("refused", None, (), (), (), T).status is Status.UNKNOWN
    assert summarize(None, PrimaryState(True, None, 150000), (), (), (), T).status is Status.UNKNOWN


def test_worst_order():
    assert worst([Status.OK, Status.UNKNOWN, Status.WARNING]) is Status.UNKNOWN
    assert worst([Status.UNKNOWN, Status.CRITICAL]) is Status.CRITICAL
    assert worst([]) is Status.OK
