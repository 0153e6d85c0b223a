"""`opsdb backup` + archive_command `opsdb wal-push` + `opsdb restore --to-time ... --start`, as an operator
runs them (as the server's OS user), and every refusal: exit 2, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsdb.pg.conn import connect
from tests.fixtures.pg import free_port, os_user
from tests.integration.archiving_env import archiving_env, config_text, now_between, run
from tests.integration.test_pitr import ids, q, wait_archived, x
from tests.polling import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(pg_bin_dir):
    cluster = f'pg_bin_dir = "{pg_bin_dir}"\n'
    with archiving_env(pg_bin_dir, "opsdb-pitrcli-", lambda w, port: config_text(w, port, cluster=cluster)) as e:
        primary = e["primary"]
        x(primary, "CREATE TABLE t (id int primary key, note text)")
        e["backup"] = json.loads(run(e, "--json", "backup").stdout)
        x(primary, "INSERT INTO t VALUES (1, 'first')")
        e["halfway"] = now_between(primary)
        x(primary, "INSERT INTO t VALUES (2, 'second')")
        wait_archived(primary)
        yield e


def target_dir(env) -> Path:
    return env["factory"].new_dir() / "data"


def test_info_json_shape(env):
    doc = json.loads(run(env, "--json", "info").stdout)
    assert {"cluster", "recoverable_from", "recoverable_to", "timeline", "backups", "wal_gaps"} <= set(doc)
    assert doc["cluster"] == "main" and doc["backups"] == 1 and doc["wal_gaps"] == []
    assert doc["recoverable_from"] < env["halfway"] < doc["recoverable_to"]


def test_dry_run_prints_the_plan_and_writes_nothing(env):
    dest = target_dir(env)
    proc = run(env, "restore", "--target-dir", str(dest), "--to-time", env["halfway"], "--dry-run", as_root=True)
    assert not dest.exists()
    assert env["halfway"] in proc.stdout and "WAL from the archive" in proc.stdout and "bytes to read" in proc.stdout
    doc = json.loads(
        run(env, "--json", "restore", "--target-dir", str(dest), "--to-time", env["halfway"], "--dry-run").stdout
    )
    assert doc["plan"]["recovery"]["target"]["value"] == env["halfway"] and not dest.exists()


@pytest.mark.parametrize(
    "args,says",
    [
        (["--to-time", "2026-11-21T10:00:00"], "offset"),
        (["--to-time", "2099-01-01T00:00:00Z"], "after the newest archived WAL"),
        (["--to-time", "2000-01-01T00:00:00Z"], "no backup ends before"),
        (["--to-lsn", "FF/0"], "after the newest archived WAL"),
        (["--timeline", "9"], "timeline 9"),
        (["--to-lsn", "0/1", "--to-name", "x"], "one recovery target"),
        (["--target-action", "explode"], "target action"),
        (["--slot", "s1"], "need --standby"),
    ],
)
def test_refusals_exit_2_and_change_nothing(env, args, says):
    dest = target_dir(env)
    proc = run(env, "restore", "--target-dir", str(dest), *args, check=False, as_root=True)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and not dest.exists()


def test_restore_to_time_with_start_reports_the_point(env):
    dest = target_dir(env)
    port = free_port()
    proc = run(
        env,
        "--json",
        "restore",
        "--target-dir",
        str(dest),
        "--to-time",
        env["halfway"],
        "--start",
        "--port",
        str(port),
        as_root=True,
    )
    doc = json.loads(proc.stdout)
    assert doc["backup_id"] == env["backup"]["id"] and doc["target_dir"] == str(dest)
    point = doc["recovery_point"]
    assert point["time"] is not None and point["time"] <= env["halfway"] and point["lsn"]
    conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    with connect(conninfo) as c:
        assert [r["id"] for r in c.fetchall("SELECT id FROM t ORDER BY id")] == [1]
        assert c.fetchval("SELECT pg_is_in_recovery()") is False
    from opsdb.pg.instance import Instance
    from opsdb.proc import LocalRunner

    Instance(dest, port, env["factory"].bin_dir, os_user(), LocalRunner()).stop()


def test_restore_standby_streams(env):
    dest = target_dir(env)
    port = free_port()
    primary = env["primary"]
    proc = run(
        env,
        "--json",
        "restore",
        "--target-dir",
        str(dest),
        "--standby",
        "--start",
        "--port",
        str(port),
        "--primary-conninfo",
        f"host=127.0.0.1 port={primary.port} user=postgres",
        "--timeline",
        "current",
        as_root=True,
    )
    assert json.loads(proc.stdout)["recovery_point"]["state"] == "streaming"
    from opsdb.pg.instance import Instance
    from opsdb.proc import LocalRunner

    standby = Instance(dest, port, env["factory"].bin_dir, os_user(), LocalRunner())
    try:
        x(primary, "INSERT INTO t VALUES (77, 'streamed')")
        wait_until(lambda: 77 in ids(standby), "row 77 streamed to the standby", timeout=60, interval=0.2)
        assert q(standby, "SELECT status FROM pg_stat_wal_receiver")[0]["status"] == "streaming"
    finally:
        standby.stop()
