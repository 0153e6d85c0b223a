"""`opsdb replicas check`: how far each configured replica is behind its primary, and its slots.

collect_replicas_report() is the one place that measures replication; `opsdb metrics` reuses it.
It reads the primary first (its current LSN is the reference), then each configured replica, so a
replica can only look *more* behind than it is by the time between the two reads, never less.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opsdb.config import ClusterConfig
from opsdb.errors import DatabaseError, UsageError
from opsdb.model.replication import (
    LagThresholds,
    PrimaryState,
    ReplicaLag,
    ReplicasReport,
    SlotInfo,
    WalSender,
    evaluate_replica,
    evaluate_sender,
    evaluate_slot,
    match_sender,
    summarize,
    unreachable_replica,
)
from opsdb.pg import replication as sql
from opsdb.pg.conn import PgConnection, connect

Connect = Callable[..., PgConnection]
DEFAULT_TIMEOUT = 5.0


def thresholds_for(
    cluster: ClusterConfig, max_lag_bytes: int | None = None, max_lag_seconds: float | None = None
) -> LagThresholds:
    """The cluster's warning/critical thresholds, with the CLI's critical overrides applied."""
    if max_lag_bytes is not None and max_lag_bytes < 0:
        raise UsageError("--max-lag-bytes must not be negative")
    if max_lag_seconds is not None and max_lag_seconds < 0:
        raise UsageError("--max-lag-seconds must not be negative")
    base = LagThresholds(
        warning_bytes=cluster.lag_warning_bytes,
        critical_bytes=cluster.lag_critical_bytes,
        warning_seconds=cluster.lag_warning_seconds,
        critical_seconds=cluster.lag_critical_seconds,
        slot_retained_warning_bytes=cluster.slot_retained_warning_bytes,
    )
    return base.with_overrides(max_lag_bytes, max_lag_seconds)


def collect_replicas_report(
    primary_conninfo: str,
    replicas: Sequence[tuple[str, str]],
    thresholds: LagThresholds,
    *,
    connect_fn: Connect = connect,
    timeout: float = DEFAULT_TIMEOUT,
) -> ReplicasReport:
    """Measure the primary (senders, slots) and every configured (name, conninfo) replica; never raises
    for an unreachable server: that becomes UNKNOWN (primary) or CRITICAL (replica) in the report."""
    primary: PrimaryState | None = None
    primary_error: str | None = None
    senders: tuple[WalSender, ...] = ()
    slots: tuple[SlotInfo, ...] = ()
    try:
        with connect_fn(primary_conninfo, timeout=timeout) as conn:
            primary = sql.primary_state(conn)
            if not primary.in_recovery:
                senders = tuple(evaluate_sender(s, thresholds) for s in sql.wal_senders(conn))
                slots = tuple(evaluate_slot(s, thresholds) for s in sql.replication_slots(conn, primary.server_version))
    except DatabaseError as exc:
        primary_error = str(exc)
    primary_lsn = primary.current_lsn if primary else None

    measured: list[ReplicaLag] = []
    for name, conninfo in replicas:
        try:
            with connect_fn(conninfo, timeout=timeout) as conn:
                sample = sql.standby_sample(conn)
        except DatabaseError as exc:
            measured.append(unreachable_replica(name, str(exc)))
            continue
        measured.append(evaluate_replica(name, sample, primary_lsn, thresholds, match_sender(sample, senders)))
    return summarize(primary_error, primary, tuple(measured), senders, slots, thresholds)


def check_replicas(
    cluster: ClusterConfig,
    *,
    max_lag_bytes: int | None = None,
    max_lag_seconds: float | None = None,
    connect_fn: Connect = connect,
) -> ReplicasReport:
    """`opsdb replicas check` for one configured cluster."""
    thresholds = thresholds_for(cluster, max_lag_bytes, max_lag_seconds)
    pairs = [(r.name, r.conninfo) for r in cluster.replicas]
    return collect_replicas_report(cluster.conninfo, pairs, thresholds, connect_fn=connect_fn)
