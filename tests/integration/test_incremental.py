"""`opsdb backup --incremental` and the restore of a chain (pg_combinebackup), as an operator runs them.

On PostgreSQL 17+: full, changes, incremental, more changes (a point in time noted), incremental; then the
newest restored and a PITR into the middle of the chain, each compared row for row with the source; the
plan shows the chain; a missing parent is refused. On 15 and 16 (and with summarize_wal = off): exit 2,
nothing stored.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from opsdb.model.target import format_time
from opsdb.pg.conn import connect
from opsdb.stream.crypto import generate_key_file
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.integration.archiving_env import run
from tests.integration.test_pitr import _opsdb_for_server, v, wait_archived, x
from tests.polling import wait_until

pytestmark = pytest.mark.integration
since_17 = pytest.mark.pg_majors(since=17)  # PostgreSQL 17+ takes incremental backups
ROWS = 20000


def rows(conninfo: str) -> list[tuple[int, int, str]]:
    with connect(conninfo) as c:
        return [(r["id"], r["v"], r["note"]) for r in c.fetchall("SELECT id, v, note FROM t ORDER BY id")]


def _chown(workdir: Path) -> None:
    user = os_user()
    if user:
        entry = pwd.getpwnam(user)
        for p in [workdir, *workdir.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _config(workdir: Path, repo: Path, port: int, bin_dir: Path) -> Path:
    config = workdir / f"opsdb-{repo.name}.toml"
    config.write_text(
        f'[repository]\nurl = "file://{repo}"\n'
        f'[encryption]\nkey_file = "{workdir}/key"\nrequired = true\n'
        "[compression]\nlevel = 1\n"
        f'[clusters.main]\nconninfo = "host=127.0.0.1 port={port} user=postgres dbname=postgres"\n'
        f'pg_bin_dir = "{bin_dir}"\n'
        f'[wal]\nspool_dir = "{workdir}/spool"\n'
    )
    return config


@pytest.fixture(scope="module")
def env(pg_bin_dir: Path, pg_major: int) -> Any:
    opsdb = _opsdb_for_server()
    factory = ClusterFactory(pg_bin_dir)
    workdir = make_temp_dir("opsdb-incr-")
    try:
        generate_key_file(workdir / "key")
        port = free_port()
        config = _config(workdir, workdir / "repo", port, pg_bin_dir)
        settings: dict[str, Any] = {"archive_mode": "on", "archive_command": f"{opsdb} --config {config} wal-push %p"}
        if pg_major >= 17:
            settings["summarize_wal"] = "on"
        primary = factory(lc_messages="C", **settings)
        config.write_text(config.read_text().replace(f"port={port}", f"port={primary.port}"))
        _chown(workdir)
        e: dict[str, Any] = {"opsdb": opsdb, "config": config, "primary": primary, "factory": factory}
        e.update(workdir=workdir, major=pg_major, bin_dir=pg_bin_dir)
        x(primary, "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, note text)")
        x(primary, f"INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, {ROWS}) g")
        e["full"] = json.loads(run(e, "--json", "backup").stdout)
        if pg_major >= 17:
            x(primary, "UPDATE t SET v = 1 WHERE id % 100 = 0")  # ~1 % of the rows
            e["inc1"] = json.loads(run(e, "--json", "backup", "--incremental").stdout)
            x(primary, "UPDATE t SET v = 2, note = 'b' WHERE id % 100 = 7")
            x(primary, "DELETE FROM t WHERE id % 1000 = 3")
            run(e, "heartbeat")  # the drill measures the point it reached by the heartbeat row
            e["rows_middle"] = rows(primary.conninfo())
            time.sleep(0.3)
            e["middle"] = format_time(v(primary, "SELECT clock_timestamp()"))
            time.sleep(0.3)
            x(primary, f"INSERT INTO t SELECT g, 3, 'c' FROM generate_series({ROWS + 1}, {ROWS + 500}) g")
            x(primary, "UPDATE t SET v = 4 WHERE id % 100 = 50")
            e["inc2"] = json.loads(run(e, "--json", "backup", "--incremental").stdout)
            e["rows_newest"] = rows(primary.conninfo())
            wait_archived(primary)
        yield e
    finally:
        factory.close()
        shutil.rmtree(workdir, ignore_errors=True)


def listed(env: Any, config: Path | None = None) -> list[dict[str, Any]]:
    e = dict(env, config=config or env["config"])
    return json.loads(run(e, "--json", "backups", "list").stdout)["backups"]


@pytest.mark.pg_majors(before=17)
def test_refused_before_17_with_the_reason_and_nothing_stored(env: Any) -> None:
    before = listed(env)
    proc = run(env, "backup", "--incremental", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "need PostgreSQL 17 or later" in proc.stderr and "Traceback" not in proc.stderr
    assert listed(env) == before


@since_17
def test_the_chain_is_recorded_and_listed(env: Any) -> None:
    full, inc1, inc2 = env["full"], env["inc1"], env["inc2"]
    assert full["kind"] == "physical" and full["parent"] is None
    assert inc1["kind"] == "incremental" and inc1["parent"] == full["id"] and inc1["id"].endswith("-I")
    assert inc2["kind"] == "incremental" and inc2["parent"] == inc1["id"]
    assert [(b["id"], b["kind"], b["parent"]) for b in listed(env)] == [
        (full["id"], "physical", None),
        (inc1["id"], "incremental", full["id"]),
        (inc2["id"], "incremental", inc1["id"]),
    ]
    # only the changed blocks (and the small files); the WAL inside both (-X fetch) is much the same
    assert inc1["stored_bytes"] < full["stored_bytes"] / 2, (inc1["stored_bytes"], full["stored_bytes"])
    text = run(env, "backups", "list").stdout
    assert "PARENT" in text and full["id"] in text.splitlines()[2]
    info = json.loads(run(env, "--json", "info").stdout)
    assert info["chains"] == [{"full": full["id"], "incrementals": [inc1["id"], inc2["id"]]}]
    assert f"chain: {full['id']} (full) + 2 incremental" in run(env, "info").stdout


@since_17
def test_dry_run_plan_shows_the_chain_and_staging(env: Any) -> None:
    dest = env["factory"].new_dir() / "data"
    args = ("restore", "--target-dir", str(dest), "--backup", env["inc2"]["id"], "--dry-run")
    plan = json.loads(run(env, "--json", *args, as_root=True).stdout)["plan"]
    assert plan["chain"] == [env["full"]["id"], env["inc1"]["id"], env["inc2"]["id"]]
    assert plan["staging_bytes"] >= env["full"]["size_bytes"] and plan["bytes_to_read"] > 0
    assert {s["backup_id"] for s in plan["steps"]} == set(plan["chain"])
    text = run(env, *args, as_root=True).stdout
    assert "chain" in text and "pg_combinebackup" in text and "staging" in text
    assert not dest.exists()


# before the restores: their promoted servers archive new timelines into the same repository
@since_17
def test_a_drill_restores_an_incremental_chain(env: Any) -> None:
    reports = env["factory"].new_dir()
    proc = run(
        env, "--json", "drill", "--to-time", env["middle"], "--report-dir", str(reports), check=False, as_root=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["result"] == "pass", doc["checks"]
    assert (
        'drill: phase plan target="time' in proc.stderr and f"backup_id={env['inc1']['id']}" in proc.stderr
    )  # mid-chain
    assert not list(reports.parent.glob("opsdb-combine-*")), "staging left behind"


@since_17
def test_restore_of_the_newest_incremental_matches_the_source(env: Any) -> None:
    dest = env["factory"].new_dir() / "data"
    port = free_port()
    proc = run(
        env,
        "--json",
        "restore",
        "--target-dir",
        str(dest),
        "--backup",
        env["inc2"]["id"],
        "--start",
        "--port",
        str(port),
        as_root=True,
    )
    assert json.loads(proc.stdout)["backup_id"] == env["inc2"]["id"]
    conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    try:
        assert rows(conninfo) == env["rows_newest"]
        assert not list(dest.parent.glob("opsdb-combine-*")), "staging left behind"
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                os_user() or "postgres",
                "--",
                str(env["bin_dir"] / "pg_ctl"),
                "stop",
                "-D",
                str(dest),
                "-m",
                "fast",
                "-w",
            ],
            capture_output=True,
            timeout=60,
        )


@since_17
def test_pitr_into_the_middle_of_the_chain_matches_the_source(env: Any) -> None:
    dest = env["factory"].new_dir() / "data"
    port = free_port()
    proc = run(
        env,
        "--json",
        "restore",
        "--target-dir",
        str(dest),
        "--to-time",
        env["middle"],
        "--start",
        "--port",
        str(port),
        as_root=True,
    )
    doc = json.loads(proc.stdout)
    assert doc["backup_id"] == env["inc1"]["id"]  # the newest backup before the target: mid-chain
    conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    try:
        assert rows(conninfo) == env["rows_middle"]
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                os_user() or "postgres",
                "--",
                str(env["bin_dir"] / "pg_ctl"),
                "stop",
                "-D",
                str(dest),
                "-m",
                "fast",
                "-w",
            ],
            capture_output=True,
            timeout=60,
        )


@since_17
def test_a_missing_parent_is_named_before_anything_is_written(env: Any) -> None:
    workdir = env["workdir"]
    copy = workdir / "repo-missing-parent"
    shutil.copytree(workdir / "repo", copy)
    _chown(copy)
    config = _config(workdir, copy, env["primary"].port, env["bin_dir"])
    inc1 = env["inc1"]["id"]
    (copy / "clusters" / "main" / "catalog" / f"{inc1}.json").unlink()
    dest = env["factory"].new_dir() / "data"
    e = dict(env, config=config)
    proc = run(e, "restore", "--target-dir", str(dest), "--backup", env["inc2"]["id"], check=False, as_root=True)
    assert proc.returncode != 0 and inc1 in proc.stderr and "missing" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not dest.exists()
    proc = run(e, "backup", "--incremental", "--from", inc1, check=False)
    assert proc.returncode == 2 and inc1 in proc.stderr, proc.stderr


@since_17
def test_summarize_wal_off_is_refused_with_the_reason(env: Any) -> None:
    primary = env["primary"]
    before = listed(env)
    x(primary, "ALTER SYSTEM SET summarize_wal = off")
    x(primary, "SELECT pg_reload_conf()")
    try:
        wait_until(lambda: v(primary, "SHOW summarize_wal") == "off", "summarize_wal = off reloaded")
        proc = run(env, "backup", "--incremental", check=False)
        assert proc.returncode == 2 and "summarize_wal" in proc.stderr, proc.stderr
        assert listed(env) == before
    finally:
        x(primary, "ALTER SYSTEM SET summarize_wal = on")
        x(primary, "SELECT pg_reload_conf()")
