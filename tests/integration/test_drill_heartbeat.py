"""Heartbeat rows on a real server: table created on first use, rows ordered, standby refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from opsdb.errors import OperationFailed
from opsdb.ops.proof.heartbeat import record_heartbeat
from opsdb.pg import heartbeat as hb
from opsdb.pg.conn import connect

pytestmark = pytest.mark.integration


def test_heartbeat_creates_table_and_records_time_lsn_txid(pg_cluster) -> None:
    conninfo = pg_cluster.conninfo()
    first = record_heartbeat(conninfo, "ops mon")  # a schema name that needs quoting
    second = record_heartbeat(conninfo, "ops mon")
    assert second.id > first.id and second.time > first.time and second.txid > first.txid
    with connect(conninfo) as conn:
        assert hb.table_exists(conn, "ops mon")
        assert hb.count(conn, "ops mon") == 2
        assert hb.newest(conn, "ops mon") == second
        assert hb.newest(conn, "ops mon", at_or_before=second.time - timedelta(microseconds=1)) == first
        assert hb.first_after(conn, "ops mon", first.time) == second
        assert hb.first_after(conn, "ops mon", second.time) is None
        assert conn.fetchval("SELECT %s::pg_lsn <= pg_current_wal_insert_lsn()", (second.lsn,))


def test_heartbeat_prunes_old_rows(pg_cluster) -> None:
    conninfo = pg_cluster.conninfo()
    record_heartbeat(conninfo, "prune")
    with connect(conninfo) as conn:
        conn.execute(f"UPDATE {hb.table_name('prune')} SET beat_time = now() - interval '100 days'")
    record_heartbeat(conninfo, "prune", keep_days=90)
    with connect(conninfo) as conn:
        assert hb.count(conn, "prune") == 1


def test_heartbeat_refuses_a_server_in_recovery(make_cluster) -> None:
    standby = make_cluster(start=False, max_connections=100)  # a standby needs >= what pg_control recorded
    (standby.data_dir / "standby.signal").touch()
    standby.start()
    with pytest.raises(OperationFailed, match="in recovery"):
        record_heartbeat(standby.conninfo(), "public")
