"""Instance, conn and tools against real PostgreSQL clusters (made by tests/fixtures/pg.py)."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from opsdb.errors import DatabaseError, ToolError
from opsdb.pg import conn
from opsdb.pg.instance import Instance
from opsdb.pg.tools import PgTools
from opsdb.proc import Cmd, LocalRunner
from tests.polling import raises, wait_until

pytestmark = pytest.mark.integration

PASSWORD = "Zq8-never-in-argv"
runner = LocalRunner()


def test_shared_cluster_is_running_with_test_settings(pg_cluster: Instance) -> None:
    assert pg_cluster.is_running()
    with conn.connect(pg_cluster.conninfo()) as c:
        assert c.server_major() >= 13
        assert c.settings(["wal_level", "max_wal_senders", "fsync", "no_such_setting"]) == {
            "wal_level": "replica",
            "max_wal_senders": "10",
            "fsync": "off",
            "no_such_setting": None,
        }
        assert c.in_recovery() is False
        assert c.data_directory() == str(pg_cluster.data_dir)
        assert c.databases() == ["postgres"]
        assert "template1" in c.databases(exclude_templates=False)
        assert c.system_identifier() == int(pg_cluster.controldata()["Database system identifier"])
        assert c.current_wal_lsn().count("/") == 1
        assert c.timeline() == 1


def test_query_errors_carry_the_server_message(pg_cluster: Instance) -> None:
    with conn.connect(pg_cluster.conninfo()) as c:
        with pytest.raises(DatabaseError, match='query failed: relation "missing" does not exist') as info:
            c.fetchall("SELECT * FROM missing")
        assert info.value.sqlstate == "42P01"  # type: ignore[attr-defined]
        assert c.fetchval("SELECT %s::int + 1", (41,)) == 42  # the connection is still usable (autocommit)
        assert c.fetchone("SELECT 1 AS a WHERE false") is None
        assert c.fetchall("SELECT 1 AS a, 'x' AS b") == [{"a": 1, "b": "x"}]


def test_unreachable_server_message_is_redacted() -> None:
    with pytest.raises(DatabaseError) as info:
        conn.connect(f"host=127.0.0.1 port=1 user=u password={PASSWORD} dbname=d", timeout=2)
    text = str(info.value)
    assert text.startswith("unable to connect to host=127.0.0.1 port=1 user=u password=*** dbname=d: ")
    assert "Connection refused" in text
    assert PASSWORD not in text


def _enable_password_auth(inst: Instance) -> str:
    """A role that must authenticate with a password over TCP; returns its conninfo (with the password)."""
    with conn.connect(inst.conninfo()) as c:
        c.execute("DROP ROLE IF EXISTS pwuser")
        c.execute(f"CREATE ROLE pwuser LOGIN PASSWORD '{PASSWORD}'")
        hba = inst.data_dir / "pg_hba.conf"
        stat = hba.stat()
        hba.write_text("host all pwuser 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        os.chown(hba, stat.st_uid, stat.st_gid)
        c.execute("SELECT pg_reload_conf()")
    wrong = f"host=127.0.0.1 port={inst.port} user=pwuser dbname=postgres password=wrong"
    wait_until(lambda: raises(DatabaseError, lambda: conn.connect(wrong).close()), "pg_hba.conf reloaded")
    return f"host=127.0.0.1 port={inst.port} user=pwuser dbname=postgres password='{PASSWORD}'"


def test_password_reaches_the_tool_only_through_its_environment(pg_cluster: Instance, pg_bin_dir: Path) -> None:
    with_password = _enable_password_auth(pg_cluster)
    tools = PgTools(pg_bin_dir)
    # the password is required: without it the server refuses
    with pytest.raises(ToolError, match="password"):
        runner.run(tools.psql(with_password.replace(PASSWORD, "wrong"), command="SELECT 1"))
    cmd = tools.psql(with_password, command="SELECT pg_sleep(1.5)", run_as="postgres")
    seen_cmdlines: list[bytes] = []
    with runner.stream(cmd) as out:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for pid in (p for p in os.listdir("/proc") if p.isdigit()):
                try:
                    seen_cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
                except OSError:
                    continue
            time.sleep(0.1)
        b"".join(out.chunks())
    assert any(b"pg_sleep" in line for line in seen_cmdlines), "psql was not seen running"
    assert not any(PASSWORD.encode() in line for line in seen_cmdlines)
    # and it did authenticate with the password from PGPASSWORD
    assert (
        runner.run(tools.psql(with_password, command="SELECT current_user", tuples_only=True)).text.strip() == "pwuser"
    )


def test_instance_lifecycle(make_cluster, pg_bin_dir: Path) -> None:
    inst = make_cluster(start=False, max_connections=25)
    assert not inst.is_running()
    assert oct(inst.data_dir.stat().st_mode & 0o777) == "0o700"
    assert "max_connections = '25'" in (inst.data_dir / "postgresql.auto.conf").read_text()
    assert inst.controldata()["Data page checksum version"] == "1"
    inst.start()
    assert inst.is_running()
    with conn.connect(inst.conninfo()) as c:
        assert c.fetchval("SHOW max_connections") == "25"
        assert c.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert c.fetchval("SHOW port") == str(inst.port)
    inst.stop()
    assert not inst.is_running()
    inst.stop()  # idempotent
    assert inst.controldata()["Database cluster state"] == "shut down"


def test_start_failure_reports_the_server_log(make_cluster) -> None:
    inst = make_cluster(start=False, shared_buffers="not-a-size")
    with pytest.raises(ToolError) as info:
        inst.start(timeout=20)
    assert "shared_buffers" in info.value.stderr_tail


def test_basebackup_streams_a_tar_to_stdout(pg_cluster: Instance, pg_bin_dir: Path) -> None:
    cmd = PgTools(pg_bin_dir).pg_basebackup(pg_cluster.conninfo(), label="opsdb-test")
    size = 0
    buf = io.BytesIO()
    with runner.stream(cmd, doing="backing up") as out:
        for chunk in out.chunks():
            size += len(chunk)
            buf.write(chunk)
    buf.seek(0)
    names = tarfile.open(fileobj=buf, mode="r|").getnames()
    assert "PG_VERSION" in names and "backup_label" in names and "backup_manifest" in names
    assert size > 1_000_000


def test_standby_promote(make_cluster, pg_bin_dir: Path) -> None:
    primary = make_cluster()
    standby_dir = make_cluster.new_dir() / "data"
    tools = PgTools(pg_bin_dir)
    cmd = tools.pg_basebackup(primary.conninfo(), pgdata=str(standby_dir), fmt="plain", wal="stream", extra=["-R"])
    runner.run(Cmd(cmd.argv, env=cmd.env, run_as=primary.run_as, timeout=120), doing="cloning")
    from tests.fixtures.pg import free_port

    standby = Instance(standby_dir, free_port(), pg_bin_dir, primary.os_user, runner)
    standby.start()
    try:
        with conn.connect(standby.conninfo()) as c:
            assert c.in_recovery() is True
            assert c.current_wal_lsn().count("/") == 1
        standby.promote()
        with conn.connect(standby.conninfo()) as c:
            assert c.in_recovery() is False
            assert c.timeline() >= 1
    finally:
        standby.stop()
