"""Replication health as data: what the primary and each standby report, and the pure rules that turn
those figures into OK / WARNING / CRITICAL / UNKNOWN (monitoring-plugin exit codes 0/1/2/3).

Time lag without crying wolf (ops-conventions §2.1): `now() - pg_last_xact_replay_timestamp()` grows
while an idle primary commits nothing. A standby counts as 0 s behind when it has replayed up to the
primary's current LSN, or when its WAL receiver is streaming and it has replayed all it received.
When the receiver is down we keep the raw age, so a broken stream is never masked as "0 s".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from opsdb.model.lsn import Lsn
from opsdb.model.results import Status, worst
from opsdb.model.units import human_bytes


def _status_doc(item: Any) -> dict[str, Any]:
    """A measured item as JSON: its fields, the status as text and the reasons as a list."""
    doc = dataclasses.asdict(item)
    doc["status"] = item.status.value
    doc["reasons"] = list(item.reasons)
    return doc


@dataclasses.dataclass(frozen=True)
class LagThresholds:
    warning_bytes: int
    critical_bytes: int
    warning_seconds: float
    critical_seconds: float
    slot_retained_warning_bytes: int

    def with_overrides(self, max_lag_bytes: int | None, max_lag_seconds: float | None) -> LagThresholds:
        """CLI flags set the critical thresholds; a warning above the new critical is lowered to it."""
        crit_b = self.critical_bytes if max_lag_bytes is None else max_lag_bytes
        crit_s = self.critical_seconds if max_lag_seconds is None else max_lag_seconds
        return dataclasses.replace(
            self,
            critical_bytes=crit_b,
            warning_bytes=min(self.warning_bytes, crit_b),
            critical_seconds=crit_s,
            warning_seconds=min(self.warning_seconds, crit_s),
        )


@dataclasses.dataclass(frozen=True)
class PrimaryState:
    in_recovery: bool
    current_lsn: str | None  # pg_current_wal_lsn() (None on a standby)
    server_version: int


@dataclasses.dataclass(frozen=True)
class StandbySample:
    """What one standby says about itself (pg_last_wal_*, pg_stat_wal_receiver)."""

    in_recovery: bool
    receive_lsn: str | None
    replay_lsn: str | None
    seconds_since_replay: float | None  # now() - pg_last_xact_replay_timestamp(), None if nothing replayed
    replay_paused: bool
    receiver_status: str | None  # pg_stat_wal_receiver.status; None: no WAL receiver process
    application_name: str | None  # the name the primary sees (cluster_name / primary_conninfo)


@dataclasses.dataclass(frozen=True)
class WalSender:
    """One row of pg_stat_replication on the primary."""

    application_name: str
    client_addr: str | None
    state: str | None
    sync_state: str | None
    sent_lsn: str | None
    write_lsn: str | None
    flush_lsn: str | None
    replay_lsn: str | None
    sent_lag_bytes: int | None
    write_lag_bytes: int | None
    flush_lag_bytes: int | None
    replay_lag_bytes: int | None
    write_lag_seconds: float | None
    flush_lag_seconds: float | None
    replay_lag_seconds: float | None  # NULL while idle (not zero) -> reported as 0 when caught up
    status: Status = Status.OK
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _status_doc(self)


@dataclasses.dataclass(frozen=True)
class ReplicaLag:
    """A configured replica, measured from its own connection against the primary's current LSN."""

    name: str
    state: str  # streaming | receiver down | paused | not in recovery | unreachable | ...
    reachable: bool
    in_recovery: bool | None
    receive_lsn: str | None
    replay_lsn: str | None
    lag_bytes: int | None  # primary current LSN - replay LSN
    receive_lag_bytes: int | None  # primary current LSN - receive LSN
    lag_seconds: float | None
    replay_paused: bool
    receiver_status: str | None
    sync_state: str | None  # from pg_stat_replication when the primary lists this standby
    status: Status
    reasons: tuple[str, ...]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _status_doc(self)


@dataclasses.dataclass(frozen=True)
class SlotInfo:
    slot_name: str
    slot_type: str
    database: str | None
    active: bool
    wal_status: str | None
    retained_bytes: int | None
    safe_wal_size: int | None
    status: Status = Status.OK
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _status_doc(self)


@dataclasses.dataclass(frozen=True)
class ReplicasReport:
    status: Status
    summary: str
    primary_lsn: str | None
    replicas: tuple[ReplicaLag, ...]
    senders: tuple[WalSender, ...]
    slots: tuple[SlotInfo, ...]
    thresholds: LagThresholds
    primary_error: str | None = None

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def to_dict(self) -> dict[str, Any]:
        """The `replicas check --json` document (SPEC: status, replicas[name,state,lag_bytes,lag_seconds], slots)."""
        return {
            "status": self.status.value,
            "summary": self.summary,
            "primary_lsn": self.primary_lsn,
            "primary_error": self.primary_error,
            "replicas": [r.to_dict() for r in self.replicas],
            "senders": [s.to_dict() for s in self.senders],
            "slots": [s.to_dict() for s in self.slots],
            "thresholds": dataclasses.asdict(self.thresholds),
        }


def _diff(a: str | None, b: str | None) -> int | None:
    if a is None or b is None:
        return None
    return max(0, Lsn.parse(a) - Lsn.parse(b))


def _grade(value: float | None, warning: float, critical: float, label: str, fmt: Any) -> tuple[Status, str | None]:
    if value is None:
        return Status.OK, None
    if critical and value >= critical:
        return Status.CRITICAL, f"{label} {fmt(value)} >= critical {fmt(critical)}"
    if warning and value >= warning:
        return Status.WARNING, f"{label} {fmt(value)} >= warning {fmt(warning)}"
    return Status.OK, None


def _secs(v: float) -> str:
    return f"{v:.1f}s"


def idle_aware_lag_seconds(sample: StandbySample, primary_lsn: str | None) -> float | None:
    """Time lag that stays 0 on an idle primary but keeps the raw age when the stream is broken."""
    if (
        sample.replay_lsn is not None
        and primary_lsn is not None
        and Lsn.parse(sample.replay_lsn) >= Lsn.parse(primary_lsn)
    ):
        return 0.0
    streaming = sample.receiver_status == "streaming"
    if streaming and sample.receive_lsn is not None and sample.receive_lsn == sample.replay_lsn:
        return 0.0
    if sample.seconds_since_replay is None:
        return None
    return max(0.0, sample.seconds_since_replay)


def evaluate_replica(
    name: str,
    sample: StandbySample,
    primary_lsn: str | None,
    thresholds: LagThresholds,
    sender: WalSender | None = None,
) -> ReplicaLag:
    """One configured replica's figures and status."""
    sync_state = sender.sync_state if sender else None
    if not sample.in_recovery:
        return _unmeasured(
            name,
            "not in recovery",
            "not in recovery: promoted, or not a standby",
            in_recovery=False,
            sync_state=sync_state,
        )
    lag_bytes = _diff(primary_lsn, sample.replay_lsn)
    receive_lag = _diff(primary_lsn, sample.receive_lsn)
    lag_seconds = idle_aware_lag_seconds(sample, primary_lsn)
    statuses: list[Status] = []
    reasons: list[str] = []
    if sample.receiver_status != "streaming":
        statuses.append(Status.CRITICAL)
        what = sample.receiver_status or "not running"
        reasons.append(f"WAL receiver {what}: the standby is not streaming from the primary")
    if sample.replay_paused:
        statuses.append(Status.WARNING)
        reasons.append("replay is paused (pg_wal_replay_resume() resumes it)")
    for status, reason in (
        _grade(lag_bytes, thresholds.warning_bytes, thresholds.critical_bytes, "replay lag", human_bytes),
        _grade(lag_seconds, thresholds.warning_seconds, thresholds.critical_seconds, "replay lag", _secs),
    ):
        statuses.append(status)
        if reason:
            reasons.append(reason)
    if sample.receiver_status != "streaming":
        state = "receiver down" if sample.receiver_status is None else sample.receiver_status
    elif sample.replay_paused:
        state = "paused"
    else:
        state = "streaming"
    return ReplicaLag(
        name=name,
        state=state,
        reachable=True,
        in_recovery=True,
        receive_lsn=sample.receive_lsn,
        replay_lsn=sample.replay_lsn,
        lag_bytes=lag_bytes,
        receive_lag_bytes=receive_lag,
        lag_seconds=lag_seconds,
        replay_paused=sample.replay_paused,
        receiver_status=sample.receiver_status,
        sync_state=sync_state,
        status=worst(statuses),
        reasons=tuple(reasons),
    )


def unreachable_replica(name: str, error: str) -> ReplicaLag:
    return _unmeasured(name, "unreachable", f"unreachable: {error}", reachable=False, error=error)


def _unmeasured(
    name: str,
    state: str,
    reason: str,
    *,
    reachable: bool = True,
    in_recovery: bool | None = None,
    sync_state: str | None = None,
    error: str | None = None,
) -> ReplicaLag:
    """A replica whose lag cannot be measured: CRITICAL, for `reason`."""
    return ReplicaLag(
        name=name,
        state=state,
        reachable=reachable,
        in_recovery=in_recovery,
        receive_lsn=None,
        replay_lsn=None,
        lag_bytes=None,
        receive_lag_bytes=None,
        lag_seconds=None,
        replay_paused=False,
        receiver_status=None,
        sync_state=sync_state,
        status=Status.CRITICAL,
        reasons=(reason,),
        error=error,
    )


def evaluate_sender(sender: WalSender, thresholds: LagThresholds) -> WalSender:
    """A standby as the primary sees it. NULL lag times while idle count as 0 when replay caught up."""
    statuses: list[Status] = []
    reasons: list[str] = []
    if sender.state != "streaming":
        statuses.append(Status.WARNING)
        reasons.append(f"state {sender.state or 'unknown'} (not streaming)")
    seconds = sender.replay_lag_seconds
    if seconds is None and sender.replay_lag_bytes == 0:
        seconds = 0.0
    for status, reason in (
        _grade(sender.replay_lag_bytes, thresholds.warning_bytes, thresholds.critical_bytes, "replay lag", human_bytes),
        _grade(seconds, thresholds.warning_seconds, thresholds.critical_seconds, "replay lag", _secs),
    ):
        statuses.append(status)
        if reason:
            reasons.append(reason)
    return dataclasses.replace(sender, replay_lag_seconds=seconds, status=worst(statuses), reasons=tuple(reasons))


def evaluate_slot(slot: SlotInfo, thresholds: LagThresholds) -> SlotInfo:
    """Slots that hold WAL back: `lost` is CRITICAL, `unreserved` or retention over the limit WARNING."""
    statuses: list[Status] = []
    reasons: list[str] = []
    retained = slot.retained_bytes or 0
    if slot.wal_status == "lost":
        statuses.append(Status.CRITICAL)
        reasons.append("wal_status lost: the WAL this slot needs is gone; its consumer must be rebuilt")
    elif slot.wal_status == "unreserved":
        statuses.append(Status.WARNING)
        reasons.append("wal_status unreserved: the WAL it needs will be removed at the next checkpoint")
    if not slot.active and retained > 0:
        reasons.append(f"inactive, retaining {human_bytes(retained)} of WAL")
    limit = thresholds.slot_retained_warning_bytes
    if limit and retained >= limit:
        statuses.append(Status.WARNING)
        reasons.append(f"retains {human_bytes(retained)} >= warning {human_bytes(limit)}")
    return dataclasses.replace(slot, status=worst(statuses), reasons=tuple(reasons))


def match_sender(sample: StandbySample, senders: tuple[WalSender, ...]) -> WalSender | None:
    """The pg_stat_replication row for this standby, when its application_name identifies exactly one."""
    if not sample.application_name:
        return None
    found = [s for s in senders if s.application_name == sample.application_name]
    return found[0] if len(found) == 1 else None


def summarize(
    primary_error: str | None,
    primary: PrimaryState | None,
    replicas: tuple[ReplicaLag, ...],
    senders: tuple[WalSender, ...],
    slots: tuple[SlotInfo, ...],
    thresholds: LagThresholds,
) -> ReplicasReport:
    """The overall status and a one-line summary (the first line a monitoring system shows)."""
    if primary_error is not None or primary is None:
        status = Status.UNKNOWN
        summary = f"primary unreachable: {primary_error}"
        statuses = [status] + [r.status for r in replicas]
        return ReplicasReport(worst(statuses), summary, None, replicas, senders, slots, thresholds, primary_error)
    if primary.in_recovery:
        summary = "the cluster conninfo points at a standby, not the primary"
        return ReplicasReport(Status.UNKNOWN, summary, None, replicas, senders, slots, thresholds)
    statuses = [r.status for r in replicas] + [s.status for s in senders] + [s.status for s in slots]
    status = worst(statuses)
    problems = [f"{r.name}: {r.reasons[0]}" for r in replicas if r.status is not Status.OK and r.reasons]
    problems += [f"sender {s.application_name}: {s.reasons[0]}" for s in senders if s.status is not Status.OK]
    problems += [f"slot {s.slot_name}: {'; '.join(s.reasons)}" for s in slots if s.status is not Status.OK]
    if problems:
        summary = "; ".join(problems)
    else:
        summary = f"{len(replicas)} replicas, {len(senders)} connected standbys, {len(slots)} slots"
        if replicas:
            lags = [r.lag_bytes for r in replicas if r.lag_bytes is not None]
            if lags:
                summary += f"; max replay lag {human_bytes(max(lags))}"
    return ReplicasReport(status, summary, primary.current_lsn, replicas, senders, slots, thresholds)
