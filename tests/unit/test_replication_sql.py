"""Version-dependent replication SQL and the application_name a standby streams under."""

from __future__ import annotations

from opsdb.pg.replication import SENDERS_SQL, receiver_application_name, slots_sql


def test_slots_sql_uses_wal_status_from_pg13():
    assert "wal_status," in slots_sql(150000) and "safe_wal_size::bigint" in slots_sql(130000)
    old = slots_sql(120000)
    assert "NULL::text AS wal_status" in old and "NULL::bigint AS safe_wal_size" in old


def test_senders_sql_skips_backups():
    assert "NOT IN ('pg_basebackup', 'pg_rewind')" in SENDERS_SQL


def test_receiver_application_name_order():
    conninfo = "user=postgres passfile=/x channel_binding=prefer dbname=replication host=127.0.0.1 port=5432 application_name=replica1 fallback_application_name=walreceiver"
    assert receiver_application_name(conninfo, "") == "replica1"
    assert receiver_application_name("host=h fallback_application_name=x", "node2") == "node2"
    assert receiver_application_name("host=h application_name='my app'", "") == "my app"
    assert receiver_application_name(None, "") == "walreceiver"
