"""The backup's server facts and WAL-holding slot session, over psql against a real cluster."""

from __future__ import annotations

import socket
import time

import pytest

from opsdb.errors import DatabaseError
from opsdb.ops.backup.source import choose_source, server_facts, slot_session
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner

pytestmark = pytest.mark.integration

SLOTS = "SELECT slot_name, temporary, active FROM pg_replication_slots WHERE slot_name LIKE 'opsdb_backup_%'"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_facts_match_the_server(pg_cluster: Instance) -> None:
    with connect(pg_cluster.conninfo()) as c:
        c.execute("SELECT 1")
        expected = (c.server_version().split()[0], c.server_version_num(), str(c.system_identifier()))
    facts = server_facts(pg_cluster.conninfo(), pg_cluster.tools.bin_dir, LocalRunner())
    assert (facts.version, facts.version_num, facts.system_identifier) == expected
    assert facts.in_recovery is False and facts.tablespaces == ()


def test_unreachable_server_is_a_database_error_without_the_password(pg_cluster: Instance) -> None:
    conninfo = f"host=127.0.0.1 port={_free_port()} user=postgres password=s3cret-pw dbname=postgres"
    with pytest.raises(DatabaseError) as caught:
        server_facts(conninfo, pg_cluster.tools.bin_dir, LocalRunner())
    assert "unable to query" in str(caught.value) and "s3cret-pw" not in str(caught.value)
    with pytest.raises(DatabaseError):  # --from-standby does not hide a broken primary either
        choose_source(conninfo, (), True, "main", pg_cluster.tools.bin_dir, LocalRunner())


def test_slot_is_held_for_the_session_and_dropped_after(pg_cluster: Instance) -> None:
    with connect(pg_cluster.conninfo()) as c:
        with slot_session(pg_cluster.conninfo(), pg_cluster.tools.bin_dir, LocalRunner()) as facts:
            held = c.fetchall(SLOTS)
        assert facts.version_num >= 100000
        assert len(held) == 1 and held[0]["temporary"] and held[0]["active"]
        deadline = time.monotonic() + 10  # the server drops a temporary slot when its session ends
        while c.fetchall(SLOTS) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.fetchall(SLOTS) == []


def test_slot_failure_is_a_warning_and_the_session_goes_on(
    pg_cluster: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    # a role without REPLICATION may not create slots (no server restart needed to make it fail)
    with connect(pg_cluster.conninfo()) as c:
        c.execute("DROP ROLE IF EXISTS opsdb_noslot")
        c.execute("CREATE ROLE opsdb_noslot LOGIN")
    conninfo = pg_cluster.conninfo(user="opsdb_noslot")
    with slot_session(conninfo, pg_cluster.tools.bin_dir, LocalRunner()) as facts:
        assert facts.in_recovery is False
    assert (
        "no temporary replication slot" in caplog.text
        and "replication" in caplog.text.split("no temporary replication slot", 1)[1]
    )
