"""Replication SQL (PG10+ function names) and the queries that fill opsdb.model.replication's records.

The SQL follows the tools surveyed in ops-conventions §2.2 (pgwatch `replication`, postgres_exporter
slots, CNPG's receiver check); byte differences are computed server-side with pg_wal_lsn_diff.
Version-dependent SQL comes from pure builder functions so it can be unit-tested.
"""

from __future__ import annotations

import re
from typing import Any

from opsdb.model.replication import PrimaryState, SlotInfo, StandbySample, WalSender
from opsdb.pg.conn import PgConnection

PRIMARY_STATE_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       current_setting('server_version_num')::int AS server_version
"""

# one row per walsender; pg_basebackup/pg_rewind walsenders are backups, not standbys
SENDERS_SQL = """
SELECT coalesce(application_name, '') AS application_name,
       client_addr::text AS client_addr, state, sync_state,
       sent_lsn::text AS sent_lsn, write_lsn::text AS write_lsn,
       flush_lsn::text AS flush_lsn, replay_lsn::text AS replay_lsn,
       greatest(0, pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn))::bigint AS sent_lag_bytes,
       greatest(0, pg_wal_lsn_diff(pg_current_wal_lsn(), write_lsn))::bigint AS write_lag_bytes,
       greatest(0, pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn))::bigint AS flush_lag_bytes,
       greatest(0, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::bigint AS replay_lag_bytes,
       extract(epoch FROM write_lag)::float8 AS write_lag_seconds,
       extract(epoch FROM flush_lag)::float8 AS flush_lag_seconds,
       extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds
FROM pg_stat_replication
WHERE coalesce(application_name, '') NOT IN ('pg_basebackup', 'pg_rewind')
ORDER BY application_name, client_addr::text
"""

STANDBY_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 AS seconds_since_replay,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS replay_paused,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver_status,
       (SELECT conninfo FROM pg_stat_wal_receiver LIMIT 1) AS receiver_conninfo,
       current_setting('cluster_name') AS cluster_name
"""


def slots_sql(server_version: int) -> str:
    """pg_replication_slots with retained bytes; wal_status/safe_wal_size exist from PG13."""
    newer = server_version >= 130000
    wal_status = "wal_status" if newer else "NULL::text AS wal_status"
    safe = "safe_wal_size::bigint AS safe_wal_size" if newer else "NULL::bigint AS safe_wal_size"
    return f"""
SELECT slot_name::text AS slot_name, slot_type, database::text AS database, active, {wal_status}, {safe},
       CASE WHEN restart_lsn IS NULL THEN NULL
            WHEN pg_is_in_recovery() THEN greatest(0, pg_wal_lsn_diff(pg_last_wal_receive_lsn(), restart_lsn))
            ELSE greatest(0, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) END::bigint AS retained_bytes
FROM pg_replication_slots
ORDER BY slot_name
"""


def primary_state(conn: PgConnection) -> PrimaryState:
    row = conn.fetchone(PRIMARY_STATE_SQL) or {}
    return PrimaryState(bool(row["in_recovery"]), row["current_lsn"], int(row["server_version"]))


def wal_senders(conn: PgConnection) -> list[WalSender]:
    return [WalSender(**row) for row in conn.fetchall(SENDERS_SQL)]


def replication_slots(conn: PgConnection, server_version: int) -> list[SlotInfo]:
    return [SlotInfo(**row) for row in conn.fetchall(slots_sql(server_version))]


_APP_NAME = re.compile(r"(?:^|\s)application_name=('(?:[^'\\]|\\.)*'|\S+)")


def receiver_application_name(receiver_conninfo: str | None, cluster_name: str | None) -> str:
    """The application_name the primary lists this standby under (libpq's choice order)."""
    if receiver_conninfo:
        match = _APP_NAME.search(receiver_conninfo)
        if match:
            return match.group(1).strip("'")
    return cluster_name or "walreceiver"


def standby_sample(conn: PgConnection) -> StandbySample:
    row: dict[str, Any] = conn.fetchone(STANDBY_SQL) or {}
    return StandbySample(
        in_recovery=bool(row["in_recovery"]),
        receive_lsn=row["receive_lsn"],
        replay_lsn=row["replay_lsn"],
        seconds_since_replay=row["seconds_since_replay"],
        replay_paused=bool(row["replay_paused"]),
        receiver_status=row["receiver_status"],
        application_name=receiver_application_name(row["receiver_conninfo"], row["cluster_name"]),
    )


def create_physical_slot(conn: PgConnection, name: str) -> None:
    """A physical slot that reserves WAL from now on (immediately_reserve = true)."""
    conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))


def slot_exists(conn: PgConnection, name: str) -> bool:
    return bool(conn.fetchval("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (name,)))
