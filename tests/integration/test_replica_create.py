"""`opsdb replica create --from-backup` (and the passfile of `--from-primary`) against a real primary.

The primary archives through `opsdb wal-push` into a file:// repository and is backed up with
`opsdb backup`; the standby is then built by the CLI from that backup, started, and must catch up
from the archive (the WAL it needs is gone from the primary's pg_wal) and then stream. The cluster's
conninfo uses a role that must authenticate with SCRAM, so streaming proves the passfile works.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.errors import DatabaseError
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from opsdb.stream.crypto import generate_key_file
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.integration.archiving_env import run
from tests.integration.test_pitr import _opsdb_for_server, ids, q, v, wait_archived, x

pytestmark = pytest.mark.integration

SECRET = "rep-S3cret:with\\odd'chars"
REPLICATOR = "replicator"


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _require_scram(primary: Instance) -> None:
    """REPLICATOR must log in with SCRAM (everything else stays trust)."""
    hba = primary.data_dir / "pg_hba.conf"
    lines = [f"host {db} {REPLICATOR} 127.0.0.1/32 scram-sha-256" for db in ("all", "replication")]
    hba.write_text("\n".join(lines) + "\n" + hba.read_text())
    x(primary, f"CREATE ROLE {REPLICATOR} LOGIN REPLICATION PASSWORD {_sql_literal(SECRET)}")
    x(primary, "SELECT pg_reload_conf()")


def _config(workdir: Path, name: str, conninfo: str, pg_bin_dir: Path) -> Path:
    path = workdir / name
    path.write_text(
        f'[repository]\nurl = "file://{workdir}/repo"\n'
        f'[encryption]\nkey_file = "{workdir}/key"\nrequired = true\n'
        "[compression]\nlevel = 1\n"
        f"[clusters.main]\nconninfo = {json.dumps(conninfo)}\n"
        f'pg_bin_dir = "{pg_bin_dir}"\n'
        f'[wal]\nspool_dir = "{workdir}/spool"\n'
    )
    return path


@pytest.fixture(scope="module")
def env(pg_bin_dir: Path) -> Iterator[dict[str, Any]]:
    opsdb = _opsdb_for_server()  # skips with the reason when the server's OS user cannot run opsdb
    factory = ClusterFactory(pg_bin_dir)
    workdir = make_temp_dir("opsdb-replcreate-")
    standbys: list[Instance] = []
    try:
        generate_key_file(workdir / "key")
        admin = _config(workdir, "opsdb.toml", "host=127.0.0.1 port=PORT user=postgres dbname=postgres", pg_bin_dir)
        primary = factory(archive_mode="on", archive_command=f"{opsdb} --config {admin} wal-push %p", lc_messages="C")
        admin.write_text(admin.read_text().replace("PORT", str(primary.port)))
        replica = _config(workdir, "replica.toml", _libpq(primary.port), pg_bin_dir)
        user = os_user()
        if user:
            entry = pwd.getpwnam(user)
            for p in [workdir, *workdir.rglob("*")]:
                os.chown(p, entry.pw_uid, entry.pw_gid)
        _require_scram(primary)
        e: dict[str, Any] = {"opsdb": opsdb, "config": admin, "primary": primary, "factory": factory}
        e.update(replica=replica, standbys=standbys, workdir=workdir)
        x(primary, "CREATE TABLE t (id int primary key, note text)")
        e["backup"] = json.loads(run(e, "--json", "backup").stdout)
        # after the backup: only in the archive once the primary has recycled its segment
        lsn = v(primary, "INSERT INTO t VALUES (2, 'archived') RETURNING pg_current_wal_lsn()::text")
        e["archived_segment"] = v(primary, f"SELECT pg_walfile_name('{lsn}')")
        wait_archived(primary)
        x(primary, "CHECKPOINT")
        yield e
    finally:
        for standby in standbys:
            standby.stop(mode="immediate")
        factory.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _libpq(port: int) -> str:
    """The replicator's conninfo, its password quoted the libpq way (backslash escapes inside '...')."""
    quoted = SECRET.replace("\\", "\\\\").replace("'", "\\'")
    return f"host=127.0.0.1 port={port} user={REPLICATOR} dbname=postgres password='{quoted}'"


def create(env: dict[str, Any], *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    """`opsdb replica create` as root (it hands the files to os_user) with the replicator's config."""
    return run({**env, "config": env["replica"]}, *args, check=check, as_root=True)


def new_target(env: dict[str, Any]) -> Path:
    return env["factory"].new_dir() / "data"


def started(env: dict[str, Any], data_dir: Path) -> Instance:
    standby = Instance(data_dir, free_port(), env["factory"].bin_dir, os_user(), LocalRunner())
    env["standbys"].append(standby)
    standby.start(timeout=120)
    return standby


def wait_for_row(standby: Instance, row_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if row_id in ids(standby):
                return
        except DatabaseError:
            pass  # still starting up
        time.sleep(0.2)
    raise AssertionError(f"row {row_id} not replayed on the standby within {timeout}s: {standby.log_tail()[-2000:]}")


def slot_row(env: dict[str, Any], slot: str) -> dict[str, Any] | None:
    rows = q(env["primary"], f"SELECT active, slot_type FROM pg_replication_slots WHERE slot_name = '{slot}'")
    return rows[0] if rows else None


def test_scram_is_really_required(env):
    conninfo = f"host=127.0.0.1 port={env['primary'].port} user={REPLICATOR} dbname=postgres passfile=/nonexistent"
    with pytest.raises(DatabaseError), connect(conninfo, timeout=5):
        pass
    with connect(_libpq(env["primary"].port), timeout=5) as c:
        assert c.fetchval("SELECT current_user") == REPLICATOR


def test_standby_from_latest_backup_catches_up_from_the_archive_then_streams(env):
    primary = env["primary"]
    pg_wal = {p.name for p in (primary.data_dir / "pg_wal").iterdir()}
    assert env["archived_segment"] not in pg_wal, "the primary still has the segment: the test would prove nothing"
    dest = new_target(env)
    doc = json.loads(
        create(
            env,
            "--json",
            "replicas",
            "create",
            "--target-dir",
            str(dest),
            "--from-backup",
            "latest",
            "--slot",
            "standby1",
            "--name",
            "standby1",
        ).stdout
    )
    assert doc["source"] == f"backup:{env['backup']['id']}" and doc["backup_id"] == env["backup"]["id"]
    assert doc["slot"] == "standby1" and doc["slot_created"] is True and doc["primary_conninfo_written"] is True
    assert doc["target_dir"] == str(dest) and doc["bytes_read"] > 0

    # the password: in the passfile (0600, the server's user), never in the data directory
    passfile = Path(doc["passfile"])
    assert passfile == Path(str(dest) + ".pgpass")
    st = passfile.stat()
    assert st.st_mode & 0o777 == 0o600
    if os_user():
        assert st.st_uid == pwd.getpwnam(os_user()).pw_uid
    assert "rep-S3cret" in passfile.read_text()
    auto = (dest / "postgresql.auto.conf").read_text()
    assert "S3cret" not in auto and "password" not in auto and f"passfile={passfile}" in auto
    assert "wal-fetch" in auto and env["opsdb"] in auto and "primary_slot_name = 'standby1'" in auto
    assert "S3cret" not in json.dumps(doc)
    assert (dest / "standby.signal").exists()
    assert slot_row(env, "standby1") == {"active": False, "slot_type": "physical"}

    standby = started(env, dest)
    wait_for_row(standby, 2)  # replayed from the archive (the primary no longer has that segment)
    x(primary, "INSERT INTO t VALUES (3, 'streamed')")
    wait_for_row(standby, 3)
    assert v(standby, "SELECT pg_is_in_recovery()") is True
    deadline = time.monotonic() + 30
    senders: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        senders = q(primary, "SELECT state FROM pg_stat_replication WHERE application_name = 'standby1'")
        if senders and senders[0]["state"] == "streaming":
            break
        time.sleep(0.2)
    assert senders == [{"state": "streaming"}]
    assert q(standby, "SELECT status, slot_name FROM pg_stat_wal_receiver") == [
        {"status": "streaming", "slot_name": "standby1"}
    ]
    assert slot_row(env, "standby1") == {"active": True, "slot_type": "physical"}

    # the same slot while that standby uses it: refused before anything is written
    other = new_target(env)
    proc = create(
        env,
        "replica",
        "create",
        "--target-dir",
        str(other),
        "--from-backup",
        "latest",
        "--slot",
        "standby1",
        check=False,
    )
    assert proc.returncode == 2 and "in use" in proc.stderr
    assert not other.exists() and not Path(str(other) + ".pgpass").exists()


@pytest.mark.parametrize(
    "args,says",
    [
        (["--from-backup", "20000101T000000Z-nope"], "no complete physical backup"),
        (["--from-backup", "latest", "--slot", "Bad-Slot"], "invalid slot name"),
        (["--from-backup", "latest", "--from-primary"], "exactly one"),
        ([], "exactly one"),
    ],
)
def test_refusals_exit_2_and_change_nothing(env, args, says):
    dest = new_target(env)
    proc = create(env, "replica", "create", "--target-dir", str(dest), "--slot", "never_made", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert not dest.exists() and not Path(str(dest) + ".pgpass").exists()
    assert slot_row(env, "never_made") is None


def test_non_empty_directory_is_refused(env):
    dest = new_target(env)
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    proc = create(
        env,
        "replica",
        "create",
        "--target-dir",
        str(dest),
        "--from-backup",
        "latest",
        "--slot",
        "never_made",
        check=False,
    )
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert [p.name for p in dest.iterdir()] == ["keep.txt"] and (dest / "keep.txt").read_text() == "mine"
    assert not Path(str(dest) + ".pgpass").exists() and slot_row(env, "never_made") is None


def test_from_primary_keeps_the_password_out_of_the_data_directory(env):
    dest = new_target(env)
    doc = json.loads(
        create(
            env, "--json", "replica", "create", "--target-dir", str(dest), "--from-primary", "--name", "cloned"
        ).stdout
    )
    passfile = Path(doc["passfile"])
    assert doc["source"] == "primary" and passfile.stat().st_mode & 0o777 == 0o600
    auto = (dest / "postgresql.auto.conf").read_text()
    assert "S3cret" not in auto and "password" not in auto and f"passfile={passfile}" in auto
    standby = started(env, dest)
    x(env["primary"], "INSERT INTO t VALUES (4, 'cloned')")
    wait_for_row(standby, 4)
    assert q(standby, "SELECT status FROM pg_stat_wal_receiver") == [{"status": "streaming"}]


def test_from_primary_refuses_an_existing_slot(env):
    x(env["primary"], "SELECT pg_create_physical_replication_slot('taken')")
    try:
        dest = new_target(env)
        proc = create(
            env, "replica", "create", "--target-dir", str(dest), "--from-primary", "--slot", "taken", check=False
        )
        assert proc.returncode == 2 and "already exists" in proc.stderr
        assert not dest.exists()
    finally:
        x(env["primary"], "SELECT pg_drop_replication_slot('taken')")
