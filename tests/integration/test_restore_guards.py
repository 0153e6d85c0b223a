"""Restores never stop at the wrong point silently (issue #13 items 3-6): a gap in the archived WAL, a
target after the last archived commit, a server opsdb cannot log into, a catalog entry under another
id and a tampered backup_manifest. Real PostgreSQL, a file:// repository (each damaging case works on
its own copy of the repository). Every refusal: non-zero exit, the missing thing named, no server
promoted, nothing left in the target.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from opsdb.config import load_settings
from opsdb.errors import OperationFailed
from opsdb.model.target import RecoveryTarget, format_time
from opsdb.ops.common.codec import repository
from opsdb.ops.recovery.pitr_reach import end_reader
from opsdb.ops.recovery.restore_execute import execute_restore
from opsdb.ops.recovery.restore_plan import RestoreRequest, plan_restore
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from opsdb.repo import envelope, layout
from opsdb.stream.crypto import generate_key_file
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.integration.archiving_env import run
from tests.integration.test_pitr import _opsdb_for_server, v, wait_archived, x

pytestmark = pytest.mark.integration


def _chown_all(root: Path) -> None:
    user = os_user()
    if user:
        entry = pwd.getpwnam(user)
        for p in [root, *root.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _config(workdir: Path, repo: Path, port: int, bin_dir: Path, conninfo_extra: str = "") -> Path:
    config = workdir / f"opsdb-{repo.name}.toml"
    config.write_text(
        f'[repository]\nurl = "file://{repo}"\n'
        f'[encryption]\nkey_file = "{workdir}/key"\nrequired = true\n'
        "[compression]\nlevel = 1\n"
        f'[clusters.main]\nconninfo = "host=127.0.0.1 port={port} user=postgres dbname=postgres{conninfo_extra}"\n'
        f'pg_bin_dir = "{bin_dir}"\n'
        f'[wal]\nspool_dir = "{workdir}/spool"\n'
    )
    return config


@pytest.fixture(scope="module")
def env(pg_bin_dir):
    """An idle primary: a backup, then rows 1..4 each committed into its own archived segment."""
    opsdb = _opsdb_for_server()
    factory = ClusterFactory(pg_bin_dir)
    workdir = make_temp_dir("opsdb-guards-")
    try:
        generate_key_file(workdir / "key")
        repo = workdir / "repo"
        config = _config(workdir, repo, 0, pg_bin_dir)
        primary = factory(archive_mode="on", archive_command=f"{opsdb} --config {config} wal-push %p", lc_messages="C")
        config.write_text(config.read_text().replace("port=0 ", f"port={primary.port} "))
        _chown_all(workdir)
        e = {"opsdb": opsdb, "config": config, "primary": primary, "factory": factory, "workdir": workdir}
        e["bin_dir"] = pg_bin_dir
        x(primary, "CREATE TABLE t (id int primary key)")
        e["backup"] = json.loads(run(e, "--json", "backup").stdout)
        segments = []
        for n in range(1, 5):
            e["before_last_commit"] = v(primary, "SELECT clock_timestamp()")
            x(primary, f"INSERT INTO t VALUES ({n})")
            segments.append(v(primary, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())"))
            wait_archived(primary)
        e["segments"] = segments  # segments[i] holds the commit of row i+1
        e["last_commit"] = v(primary, "SELECT clock_timestamp()")
        time.sleep(1.5)
        e["after_last_commit"] = format_time(v(primary, "SELECT clock_timestamp()") - timedelta(seconds=0.5))
        wait_archived(primary)  # a segment holding no commit is archived after the target time
        yield e
    finally:
        factory.close()
        shutil.rmtree(workdir, ignore_errors=True)


def repo_copy(env, name: str, conninfo_extra: str = "") -> dict:
    """The environment with its own copy of the repository (damage stays in the copy)."""
    repo = env["workdir"] / name
    shutil.copytree(env["workdir"] / "repo", repo)
    _chown_all(repo)
    config = _config(env["workdir"], repo, env["primary"].port, env["bin_dir"], conninfo_extra)
    _chown_all(config)
    return {**env, "config": config, "repo": repo}


def wal_file(env, name: str) -> Path:
    return env["repo"] / layout.wal_object("main", name)


def target_dir(env) -> Path:
    return env["factory"].new_dir() / "data"


def assert_nothing_restored(dest: Path) -> None:
    assert not dest.exists() or not any(dest.iterdir()), sorted(p.name for p in dest.iterdir())


def stop(dest: Path, bin_dir: Path) -> None:
    Instance(dest, 1, bin_dir, os_user(), LocalRunner()).stop(mode="immediate", timeout=30)


def rows(port: int, sockets: Path) -> list[int]:
    with connect(f"host={sockets} port={port} user=postgres dbname=postgres", timeout=10) as conn:
        return [r["id"] for r in conn.fetchall("SELECT id FROM t ORDER BY id")]


# --- gaps -----------------------------------------------------------------------------------------


def test_a_missing_middle_segment_refuses_the_default_restore(env):
    e = repo_copy(env, "repo-gap")
    missing = env["segments"][1]
    wal_file(e, missing).unlink()
    dest = target_dir(e)
    for extra in ([], ["--dry-run"], ["--to-time", env["after_last_commit"]]):
        proc = run(e, "restore", "--target-dir", str(dest), *extra, check=False, as_root=True)
        assert proc.returncode == 2, proc.stderr
        assert missing in proc.stderr and "--accept-gap" in proc.stderr
        assert_nothing_restored(dest)
    proc = run(e, "--json", "restore", "--target-dir", str(dest), check=False, as_root=True)
    assert proc.returncode == 2 and missing in proc.stdout + proc.stderr


def test_accept_gap_restores_up_to_the_gap_and_says_so(env):
    e = repo_copy(env, "repo-gap-accepted")
    missing = env["segments"][2]
    wal_file(e, missing).unlink()
    dest = target_dir(e)
    doc = json.loads(run(e, "--json", "restore", "--target-dir", str(dest), "--accept-gap", "--dry-run").stdout)
    gap = doc["plan"]["recovery"]["gap"]
    assert gap["first_missing"] == missing and gap["accepted"] and gap["requested"] == "latest"
    assert "before the gap" in doc["plan"]["recovery"]["reaches"]["how"] and not dest.exists()
    human = run(e, "restore", "--target-dir", str(dest), "--accept-gap", "--dry-run", as_root=True).stdout
    assert f"WAL gap: {missing} is missing" in human and "the restore reaches" in human
    port = free_port()
    proc = run(
        e,
        "--json",
        "restore",
        "--target-dir",
        str(dest),
        "--accept-gap",
        "--start",
        "--port",
        str(port),
        "--wait-timeout",
        "120",
        as_root=True,
    )
    try:
        result = json.loads(proc.stdout)
        assert result["gap"]["first_missing"] == missing and result["recovery_point"]["state"] == "promoted"
        got = rows(port, dest.with_name("data.sock"))
        assert got == [1, 2]  # row 3 was in the gap
    finally:
        stop(dest, env["bin_dir"])


# --- the window ends at the last commit ------------------------------------------------------------


def test_a_time_after_the_last_archived_commit_is_refused_at_plan_time(env):
    dest = target_dir(env)
    proc = run(env, "restore", "--target-dir", str(dest), "--to-time", env["after_last_commit"], check=False)
    assert proc.returncode == 2, proc.stderr
    assert "last commit" in proc.stderr and "--latest" in proc.stderr
    said = re.search(r"the last commit or abort in it: (\S+)\)", proc.stderr).group(1)
    assert env["before_last_commit"] <= datetime.fromisoformat(said) <= env["last_commit"]  # not an upload time
    assert_nothing_restored(dest)


def test_start_fails_within_seconds_quoting_the_fatal_line(env):
    """The plan check bypassed (as in a race): PostgreSQL ends recovery before the target, opsdb says so."""
    settings = load_settings(env["config"])
    repo = repository(settings)
    dest = target_dir(env)
    inside = RecoveryTarget.from_options(to_time=format_time(env["before_last_commit"]))
    request = RestoreRequest(
        cluster="main",
        target_dir=dest,
        start=True,
        port=free_port(),
        os_user=os_user(),
        bin_dir=env["bin_dir"],
        recovery=inside,
        restore_command=f'{env["opsdb"]} --config {env["config"]} wal-fetch "%f" "%p"',
        start_timeout=600,
    )
    reader = end_reader(repo.storage, "main", repo.keys, env["bin_dir"], LocalRunner())
    plan = plan_restore(request, storage=repo.storage, keys=repo.keys, read_end=reader)
    after = RecoveryTarget.from_options(to_time=env["after_last_commit"])
    raced = dataclasses.replace(plan, recovery_settings={**plan.recovery_settings, **after.recovery_settings()})
    started = time.monotonic()
    try:
        with pytest.raises(OperationFailed) as err:
            execute_restore(
                raced,
                dataclasses.replace(request, recovery=after),
                storage=repo.storage,
                keys=repo.keys,
                runner=LocalRunner(),
            )
        assert time.monotonic() - started < 30
        assert "recovery ended before configured recovery target was reached" in str(err.value)
        instance = Instance(dest, 1, env["bin_dir"], os_user(), LocalRunner())
        assert not instance.is_running()
        assert instance.controldata()["Database cluster state"] != "in production"  # never promoted
    finally:
        stop(dest, env["bin_dir"])


# --- catalog ids and backup_manifest --------------------------------------------------------------


def test_a_catalog_entry_copied_under_another_id_fails_and_is_never_listed_twice(env):
    e = repo_copy(env, "repo-copied-entry")
    backup_id = env["backup"]["backup_id"] if "backup_id" in env["backup"] else env["backup"]["id"]
    new_id = backup_id[:-1] + ("0" if backup_id[-1] != "0" else "1")
    src = e["repo"] / layout.catalog_entry("main", backup_id)
    shutil.copy2(src, src.with_name(f"{new_id}.json"))
    dest = target_dir(e)
    proc = run(e, "restore", "--target-dir", str(dest), "--backup", new_id, check=False, as_root=True)
    assert proc.returncode != 0 and new_id in proc.stderr, proc.stderr
    assert_nothing_restored(dest)
    listed = run(e, "--json", "backups", "list", check=False)
    if listed.returncode == 0:
        ids = [b["id"] for b in json.loads(listed.stdout)["backups"]]
        assert len(ids) == len(set(ids))
    else:
        assert new_id in listed.stderr


def test_a_tampered_backup_manifest_fails_the_restore_before_start(env):
    e = repo_copy(env, "repo-manifest")
    backup_id = env["backup"].get("backup_id") or env["backup"]["id"]
    settings = load_settings(e["config"])
    repo = repository(settings, writable=True)
    key = layout.backup_object("main", backup_id, "backup_manifest")
    text = b"".join(envelope.get_object(repo.storage, key, repo.keys)).decode()
    doc = json.loads(text)
    entry = next(f for f in doc["Files"] if f.get("Path") == "PG_VERSION")
    forged = text.replace(f'"Size": {entry["Size"]}', f'"Size": {entry["Size"] + 1}', 1)
    (e["repo"] / key).unlink()
    envelope.put_object(repo.storage, key, [forged.encode()], repo.codec)
    _chown_all(e["repo"])
    dest = target_dir(e)
    port = free_port()
    proc = run(e, "restore", "--target-dir", str(dest), "--start", "--port", str(port), check=False, as_root=True)
    assert proc.returncode != 0 and "backup_manifest" in proc.stderr, proc.stderr
    assert_nothing_restored(dest)
    assert not (dest / "postmaster.pid").exists()


# --- logging in ------------------------------------------------------------------------------------


def test_scram_with_the_password_only_in_the_conninfo_completes(env):
    """pg_hba.conf asks scram-sha-256 everywhere; the password is only in the cluster's conninfo."""
    factory = env["factory"]
    workdir = env["workdir"]
    primary = factory(lc_messages="C")
    secret = "s3cret-only-in-conninfo"
    x(primary, f"ALTER USER postgres PASSWORD '{secret}'")
    x(primary, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (7)")
    hba = primary.data_dir / "pg_hba.conf"
    hba.write_text(
        "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
        "host replication all 127.0.0.1/32 scram-sha-256\n"
    )
    x(primary, "SELECT pg_reload_conf()")
    repo = workdir / "repo-scram"
    config = _config(workdir, repo, primary.port, env["bin_dir"], f" password={secret}")
    _chown_all(workdir)
    e = {**env, "config": config}
    os.environ.pop("PGPASSWORD", None)
    run(e, "backup")
    dest = target_dir(e)
    port = free_port()
    started = time.monotonic()
    proc = run(
        e,
        "--json",
        "restore",
        "--target-dir",
        str(dest),
        "--start",
        "--port",
        str(port),
        "--wait-timeout",
        "120",
        as_root=True,
    )
    try:
        assert time.monotonic() - started < 60
        assert json.loads(proc.stdout)["recovery_point"]["state"] == "promoted"
        with connect(f"host={dest.with_name('data.sock')} port={port} user=postgres password={secret}") as conn:
            assert conn.fetchval("SELECT id FROM t") == 7
        assert secret not in proc.stdout + proc.stderr
    finally:
        stop(dest, env["bin_dir"])
    # no password anywhere: opsdb cannot log in at all, and still sees the promotion in the server's log
    blind = {**env, "config": _config(workdir, repo, primary.port, env["bin_dir"])}
    _chown_all(blind["config"])
    dest = target_dir(e)
    started = time.monotonic()
    proc = run(
        blind,
        "--json",
        "restore",
        "--target-dir",
        str(dest),
        "--start",
        "--port",
        str(free_port()),
        "--wait-timeout",
        "120",
        as_root=True,
    )
    try:
        assert time.monotonic() - started < 60
        assert json.loads(proc.stdout)["recovery_point"]["state"] == "promoted"
    finally:
        stop(dest, env["bin_dir"])


# --- drills ----------------------------------------------------------------------------------------


def drill_checks(env) -> dict[str, dict]:
    proc = run(env, "--json", "drill", check=False, as_root=True)
    assert proc.stdout, proc.stderr
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


def test_a_latest_drill_replays_to_the_last_archived_record(env):
    check = drill_checks(repo_copy(env, "repo-drill"))["replay reached the planned target"]
    assert check["status"] == "pass", check


def test_a_latest_drill_fails_when_replay_ends_short_of_the_archive(env):
    e = repo_copy(env, "repo-drill-gap")
    wal_file(e, env["segments"][2]).unlink()
    check = drill_checks(e)["replay reached the planned target"]
    assert check["status"] == "fail" and "short of the end of the archived WAL" in check["detail"], check
