"""`opsdb backup` + archive_command `opsdb wal-push` + `opsdb restore --to-time ... --start`, as an operator
runs them (as the server's OS user), and every refusal: exit 2, nothing written.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsdb.model.target import format_time
from opsdb.pg.conn import connect
from opsdb.stream.crypto import generate_key_file
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.integration.test_pitr import _opsdb_for_server, ids, q, v, wait_archived, x

pytestmark = pytest.mark.integration
OPSDB_HERE = str(Path(sys.executable).with_name("opsdb"))


def run(env, *args, check=True, as_root=False):
    """The CLI as the server's OS user (which owns the repository, as in a real deployment); restore runs
    as root with this checkout's opsdb (it hands the restored files to os_user), while the
    restore_command it writes uses the server user's opsdb ($OPSDB_EXECUTABLE)."""
    user = None if as_root else os_user()
    argv = [env["opsdb"] if user else OPSDB_HERE, "--config", str(env["config"]), *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    environ = dict(os.environ, OPSDB_EXECUTABLE=env["opsdb"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=environ, cwd="/tmp")
    if check and proc.returncode != 0:
        raise AssertionError(f"opsdb {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def env(pg_bin_dir):
    opsdb = _opsdb_for_server()
    factory = ClusterFactory(pg_bin_dir)
    workdir = make_temp_dir("opsdb-pitrcli-")
    try:
        generate_key_file(workdir / "key")
        config = workdir / "opsdb.toml"
        config.write_text(
            f'[repository]\nurl = "file://{workdir}/repo"\n'
            f'[encryption]\nkey_file = "{workdir}/key"\nrequired = true\n'
            "[compression]\nlevel = 1\n"
            f'[clusters.main]\nconninfo = "host=127.0.0.1 port=PORT user=postgres dbname=postgres"\n'
            f'pg_bin_dir = "{pg_bin_dir}"\n'
            f'[wal]\nspool_dir = "{workdir}/spool"\n'
        )
        primary = factory(archive_mode="on", archive_command=f"{opsdb} --config {config} wal-push %p", lc_messages="C")
        config.write_text(config.read_text().replace("PORT", str(primary.port)))
        user = os_user()
        if user:
            entry = pwd.getpwnam(user)
            for p in [workdir, *workdir.rglob("*")]:
                os.chown(p, entry.pw_uid, entry.pw_gid)
        e = {"opsdb": opsdb, "config": config, "primary": primary, "factory": factory, "workdir": workdir}
        x(primary, "CREATE TABLE t (id int primary key, note text)")
        e["backup"] = json.loads(run(e, "--json", "backup").stdout)
        x(primary, "INSERT INTO t VALUES (1, 'first')")
        time.sleep(0.3)
        after_1 = v(primary, "SELECT clock_timestamp()")
        time.sleep(1.0)
        before_2 = v(primary, "SELECT clock_timestamp()")
        time.sleep(0.3)
        x(primary, "INSERT INTO t VALUES (2, 'second')")
        wait_archived(primary)
        e["halfway"] = format_time(after_1 + (before_2 - after_1) / 2)
        yield e
    finally:
        factory.close()
        shutil.rmtree(workdir, ignore_errors=True)


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
        env, "--json", "restore", "--target-dir", str(dest), "--to-time", env["halfway"], "--start", "--port", str(port),
        as_root=True,
    )  # fmt: skip
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
        env, "--json", "restore", "--target-dir", str(dest), "--standby", "--start", "--port", str(port),
        "--primary-conninfo", f"host=127.0.0.1 port={primary.port} user=postgres", "--timeline", "current",
        as_root=True,
    )  # fmt: skip
    assert json.loads(proc.stdout)["recovery_point"]["state"] == "streaming"
    from opsdb.pg.instance import Instance
    from opsdb.proc import LocalRunner

    standby = Instance(dest, port, env["factory"].bin_dir, os_user(), LocalRunner())
    try:
        x(primary, "INSERT INTO t VALUES (77, 'streamed')")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and 77 not in ids(standby):
            time.sleep(0.2)
        assert 77 in ids(standby)
        assert q(standby, "SELECT status FROM pg_stat_wal_receiver")[0]["status"] == "streaming"
    finally:
        standby.stop()
