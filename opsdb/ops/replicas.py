"""`replicas check` and `replica create --from-primary`.

collect_replicas_report() is the one place that measures replication; `opsdb metrics` reuses it.
It reads the primary first (its current LSN is the reference), then each configured replica, so a
replica can only look *more* behind than it is by the time between the two reads, never less.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from opsdb.config import ClusterConfig
from opsdb.errors import DatabaseError, NotImplementedYet, UsageError
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
from opsdb.pg.conninfo import make_conninfo, parse_conninfo
from opsdb.pg.tools import PgTools
from opsdb.proc import Runner

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


# --- replica create ----------------------------------------------------------------------------------

_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


@dataclasses.dataclass(frozen=True)
class ReplicaCreated:
    target_dir: str
    source: str  # "primary" | "backup:<id>"
    slot: str | None
    application_name: str | None
    primary_conninfo_written: bool

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _prepare_target(target: Path, run_as: str | None) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"unable to create a replica in {target}: the directory exists and is not empty")
    if run_as is not None:
        try:
            entry = pwd.getpwnam(run_as)
        except KeyError:
            raise UsageError(f"os_user {run_as!r} does not exist on this machine") from None
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(target, 0o700)
    if run_as is not None:
        os.chown(target, entry.pw_uid, entry.pw_gid)


def create_replica_from_primary(
    primary_conninfo: str,
    target_dir: Path,
    *,
    runner: Runner,
    tools: PgTools,
    os_user: str | None,
    slot: str | None = None,
    application_name: str | None = None,
    timeout: float | None = None,
) -> ReplicaCreated:
    """pg_basebackup -R (standby.signal + primary_conninfo) into an empty directory, optionally creating a
    physical replication slot (-C -S) so the primary keeps the WAL the new standby still needs.

    application_name goes into primary_conninfo, so the primary lists the standby under that name and
    `replicas check` can match it to pg_stat_replication. The password, if any, travels in PGPASSWORD."""
    if slot is not None and not _SLOT_NAME.match(slot):
        raise UsageError(f"invalid slot name {slot!r}: use lower-case letters, digits and _ (at most 63)")
    params = parse_conninfo(primary_conninfo)
    params.pop("dbname", None)  # a replication connection ignores it; -R would copy it into primary_conninfo
    if application_name:
        params["application_name"] = application_name
    conninfo = make_conninfo(params)
    run_as = os_user if os.geteuid() == 0 else None
    _prepare_target(target_dir, run_as)
    extra = ["-R"]
    if slot:
        extra += ["-C", "-S", slot]
    cmd = tools.pg_basebackup(
        conninfo,
        pgdata=str(target_dir),
        fmt="plain",
        wal="stream",
        manifest_checksums=None,
        extra=extra,
        run_as=run_as,
        timeout=timeout,
    )
    runner.run(cmd, doing=f"cloning the primary into {target_dir}")
    written = (target_dir / "standby.signal").exists()
    return ReplicaCreated(str(target_dir), "primary", slot, application_name, written)


def create_replica_from_backup(*_: object, **__: object) -> ReplicaCreated:
    """Waits for the restore code (`restore --standby`)."""
    raise NotImplementedYet("`opsdb replica create --from-backup` is not implemented in this version yet")
