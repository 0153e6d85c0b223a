"""The heartbeat table: one row (time, LSN, txid) per `opsdb heartbeat`, written on the primary.

Drills read it back from the restored instance to measure the point actually recovered: the newest
row present is the recovery point, and its distance to the target is the measured RPO.

Why clock_timestamp() is a safe lower bound: PostgreSQL stops a time-targeted recovery at the first
commit whose commit time is after the target, and a row's commit time is always at or after the
clock_timestamp() taken inside its transaction. So a row with beat_time > target can never be
present after a correct recovery to target.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from opsdb.errors import OperationFailed

TABLE = "opsdb_heartbeat"


def quote_ident(name: str) -> str:
    """PostgreSQL identifier quoting (the schema name comes from the config file)."""
    return '"' + name.replace('"', '""') + '"'


def table_name(schema: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(TABLE)}"


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    id: int
    time: datetime
    lsn: str
    txid: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> Heartbeat:
        return cls(id=int(row["id"]), time=row["beat_time"], lsn=str(row["lsn"]), txid=int(row["txid"]))


def create_table_sql(schema: str) -> list[str]:
    t = table_name(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}",
        f"CREATE TABLE IF NOT EXISTS {t} ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " beat_time timestamptz NOT NULL,"
        " lsn pg_lsn NOT NULL,"
        " txid bigint NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {quote_ident(TABLE + '_time_idx')} ON {t} (beat_time)",
        f"COMMENT ON TABLE {t} IS 'written by opsdb heartbeat; read by restore drills to measure the point recovered'",
    ]


_COLUMNS = "id, beat_time, lsn::text AS lsn, txid"


def insert(conn: Any, schema: str, *, keep_days: int = 90) -> Heartbeat:
    """Create the table if needed, insert one row, prune rows older than keep_days. Primary only."""
    if conn.fetchval("SELECT pg_is_in_recovery()"):
        raise OperationFailed(
            "unable to write a heartbeat: the server is in recovery (a standby)",
            hint="point the cluster's conninfo at the primary",
        )
    if conn.fetchval("SELECT to_regclass(%s)", (table_name(schema),)) is None:
        for sql in create_table_sql(schema):
            conn.execute(sql)
    row = conn.fetchone(
        f"INSERT INTO {table_name(schema)} (beat_time, lsn, txid) "
        f"VALUES (clock_timestamp(), pg_current_wal_insert_lsn(), txid_current()) RETURNING {_COLUMNS}"
    )
    if keep_days > 0:
        conn.execute(
            f"DELETE FROM {table_name(schema)} WHERE beat_time < now() - make_interval(days => %s)", (keep_days,)
        )
    return Heartbeat.of(row)


def table_exists(conn: Any, schema: str) -> bool:
    return conn.fetchval("SELECT to_regclass(%s) IS NOT NULL", (table_name(schema),)) is True


def newest(conn: Any, schema: str, *, at_or_before: datetime | None = None) -> Heartbeat | None:
    """The newest heartbeat row (optionally at or before a time), or None."""
    if at_or_before is None:
        row = conn.fetchone(f"SELECT {_COLUMNS} FROM {table_name(schema)} ORDER BY beat_time DESC, id DESC LIMIT 1")
    else:
        row = conn.fetchone(
            f"SELECT {_COLUMNS} FROM {table_name(schema)} WHERE beat_time <= %s ORDER BY beat_time DESC, id DESC LIMIT 1",
            (at_or_before,),
        )
    return Heartbeat.of(row) if row else None


def first_after(conn: Any, schema: str, after: datetime) -> Heartbeat | None:
    """The oldest heartbeat strictly after a time, or None."""
    row = conn.fetchone(
        f"SELECT {_COLUMNS} FROM {table_name(schema)} WHERE beat_time > %s ORDER BY beat_time, id LIMIT 1", (after,)
    )
    return Heartbeat.of(row) if row else None


def count(conn: Any, schema: str) -> int:
    return int(conn.fetchval(f"SELECT count(*) FROM {table_name(schema)}"))
