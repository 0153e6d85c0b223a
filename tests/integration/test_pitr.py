"""Point-in-time recovery end to end on real clusters: archive_command = opsdb wal-push, restore_command =
opsdb wal-fetch, targets by time / name / LSN, a second PITR on the new timeline, and a standby.

The base backup here is a plain pg_basebackup (-X none, so every WAL byte comes from the archive);
planning uses the archive's own .backup history file. tests/integration/test_pitr_cli.py drives the
same through `opsdb backup` / `opsdb restore`.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsdb.errors import UsageError
from opsdb.model.lsn import Lsn
from opsdb.model.target import RecoveryTarget, format_time
from opsdb.ops.recovery import pitr
from opsdb.ops.wal import push_fetch as ops_wal
from opsdb.pg.conn import connect
from opsdb.pg.instance import CLOSE_SEGMENT_SQL, Instance
from opsdb.pg.recovery import RECOVERY_SIGNAL, STANDBY_SIGNAL, write_recovery
from opsdb.proc import Cmd, LocalRunner
from opsdb.repo import wal as repo_wal
from opsdb.repo.envelope import Codec
from opsdb.storage.local import LocalStorage
from opsdb.stream.crypto import generate_key_file
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.gate import missing
from tests.polling import wait_until

pytestmark = pytest.mark.integration


def _opsdb_for_server() -> str:
    """An opsdb executable the server's OS user can run (archive_command / restore_command run as it).

    This checkout's venv may live where `postgres` cannot reach (its interpreter under /root): then
    $OPSDB_TEST_OPSDB_BIN, or /opt/opsdb-pgvenv (python3 -m venv /opt/opsdb-pgvenv &&
    /opt/opsdb-pgvenv/bin/pip install -e .) is used."""
    user = os_user()
    for candidate in (
        os.environ.get("OPSDB_TEST_OPSDB_BIN"),
        str(Path(sys.executable).with_name("opsdb")),
        "/opt/opsdb-pgvenv/bin/opsdb",
    ):
        if not candidate or not Path(candidate).exists():
            continue
        argv = ("runuser", "-u", user, "--", candidate, "--version") if user else (candidate, "--version")
        if subprocess.run(argv, capture_output=True, timeout=60).returncode == 0:
            return candidate
    missing(f"no opsdb executable that {user or 'this user'} can run (set OPSDB_TEST_OPSDB_BIN)")


OPSDB = ""


@dataclasses.dataclass
class Backup:
    id: str
    start_lsn: Lsn
    stop_lsn: Lsn
    stop_time: datetime
    timeline: int
    kind: str = "physical"
    status: str = "complete"
    stored_bytes: int = 0


def chown(path: Path) -> None:
    user = os_user()
    if user:
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def q(instance: Instance, sql: str):
    with connect(instance.conninfo(), timeout=10) as conn:
        return conn.fetchall(sql)


def v(instance: Instance, sql: str):
    with connect(instance.conninfo(), timeout=10) as conn:
        return conn.fetchval(sql)


def x(instance: Instance, sql: str) -> None:
    with connect(instance.conninfo(), timeout=10) as conn:
        conn.execute(sql)


def wait_archived(instance: Instance, timeout: float = 60) -> None:
    """Switch WAL and wait until the archiver stored the segment just finished."""
    segment = v(instance, CLOSE_SEGMENT_SQL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = q(instance, "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver")[0]
        if row["last_archived_wal"] and row["last_archived_wal"] >= segment:
            return
        time.sleep(0.2)
    raise AssertionError(f"segment {segment} not archived in {timeout}s: {row}")


class Env:
    """One primary archiving into a file:// repository, one base backup, rows committed at known times."""

    def __init__(self, factory: ClusterFactory, workdir: Path) -> None:
        self.factory = factory
        self.workdir = workdir
        generate_key_file(workdir / "key")
        (workdir / "repo").mkdir()
        self.config = workdir / "opsdb.toml"
        self.config.write_text(
            f'[repository]\nurl = "file://{workdir}/repo"\n'
            f'[encryption]\nkey_file = "{workdir}/key"\nrequired = true\n'
            "[compression]\nlevel = 1\n"
            '[clusters.main]\nconninfo = "host=127.0.0.1"\n'
            f'[wal]\nspool_dir = "{workdir}/spool"\n'
        )
        chown(workdir)
        push = f"{OPSDB} --config {self.config} wal-push %p"
        self.primary = factory(archive_mode="on", archive_command=push, lc_messages="C")
        self.fetch = pitr.restore_command(OPSDB, str(self.config), "main")
        storage = LocalStorage(str(workdir / "repo"))
        from opsdb.stream.crypto import load_key

        key = load_key(key_file=workdir / "key")
        self.repo = ops_wal.WalRepo(storage, "main", Codec("zstd", 1, key=key), {key.id: key})

    def base_backup(self) -> Backup:
        base = self.workdir / "base"
        cmd = self.primary.tools.pg_basebackup(
            self.primary.conninfo(), pgdata=str(base), fmt="plain", wal="none", run_as=os_user()
        )
        LocalRunner().run(cmd, doing="base backup")
        wait_archived(self.primary)
        labels = [f for f in repo_wal.list_archive(self.repo.storage, "main") if f.wal.kind == "backup"]
        text = b"".join(repo_wal.fetch(self.repo.storage, "main", labels[-1].wal.name, self.repo.keys)).decode()
        field = lambda name: re.search(rf"^{name}: (.+)$", text, re.M).group(1)  # noqa: E731
        return Backup(
            id="base",
            start_lsn=Lsn.parse(field("START WAL LOCATION").split()[0]),
            stop_lsn=Lsn.parse(field("STOP WAL LOCATION").split()[0]),
            stop_time=datetime.strptime(field("STOP TIME"), "%Y-%m-%d %H:%M:%S %Z").replace(tzinfo=UTC),
            timeline=int(field("START TIMELINE")),
        )

    def restored(self) -> Instance:
        """A fresh copy of the base backup as an Instance (not started)."""
        target = self.factory.new_dir() / "data"
        LocalRunner().run(Cmd(("cp", "-a", str(self.workdir / "base"), str(target)), run_as=os_user()))
        return Instance(target, free_port(), self.factory.bin_dir, os_user(), LocalRunner())

    def recover(self, target: RecoveryTarget, *, standby: bool = False, **kw) -> tuple[Instance, pitr.RecoveryPoint]:
        instance = self.restored()
        self.factory._made.append((instance, instance.data_dir.parent))
        # what `opsdb restore` writes for this target (pitr.recovery_settings), through pg/recovery.py
        settings = pitr.recovery_settings(target, self.fetch, standby=standby, **kw)
        write_recovery(instance.data_dir, settings, STANDBY_SIGNAL if standby else RECOVERY_SIGNAL, os_user=os_user())
        point = pitr.start_and_wait(instance, target, standby=standby, connect=connect, timeout=120)
        return instance, point


@pytest.fixture(scope="module")
def env(pg_bin_dir):
    global OPSDB
    OPSDB = _opsdb_for_server()
    factory = ClusterFactory(pg_bin_dir)
    try:
        e = Env(factory, make_temp_dir("opsdb-pitr-"))
        x(e.primary, "CREATE TABLE t (id int primary key, note text)")
        e.backup = e.base_backup()
        x(e.primary, "INSERT INTO t VALUES (1, 'first')")
        time.sleep(0.3)
        e.after_1 = v(e.primary, "SELECT clock_timestamp()")
        time.sleep(1.0)
        e.before_2 = v(e.primary, "SELECT clock_timestamp()")
        time.sleep(0.3)
        e.xid_2 = v(e.primary, "INSERT INTO t VALUES (2, 'second') RETURNING txid_current()")
        v(e.primary, "SELECT pg_create_restore_point('after_two')")
        x(e.primary, "INSERT INTO t VALUES (3, 'third')")
        e.lsn_3 = v(e.primary, "SELECT pg_current_wal_insert_lsn()::text")
        x(e.primary, "INSERT INTO t VALUES (4, 'fourth')")
        wait_archived(e.primary)
        yield e
    finally:
        factory.close()
        import shutil

        shutil.rmtree(e.workdir, ignore_errors=True) if "e" in locals() else None


def ids(instance: Instance) -> list[int]:
    return [r["id"] for r in q(instance, "SELECT id FROM t ORDER BY id")]


def test_archive_command_stored_everything(env):
    row = q(env.primary, "SELECT archived_count, failed_count FROM pg_stat_archiver")[0]
    assert row["archived_count"] >= 3 and row["failed_count"] == 0
    scan = repo_wal.scan(env.repo.storage, "main", env.repo.keys)
    assert scan.gaps(1) == [] and scan.backup_labels


def _pitr_halfway(env):
    """The --to-time PITR halfway between the first two commits, made once per module (whichever test
    asks first): it promotes onto timeline 2 and archives it, which the second PITR follows."""
    if getattr(env, "halfway_pitr", None) is None:
        halfway = env.after_1 + (env.before_2 - env.after_1) / 2
        target = RecoveryTarget.from_options(to_time=format_time(halfway))
        scan = repo_wal.scan(env.repo.storage, "main", env.repo.keys)
        plan = pitr.plan_recovery(target, [env.backup], scan)  # planned before timeline 2 exists
        env.halfway_pitr = (halfway, plan, *env.recover(target))
    return env.halfway_pitr


def test_to_time_halfway_between_two_commits_gives_the_earlier_rows(env):
    halfway, plan, instance, point = _pitr_halfway(env)
    assert plan.backup.id == "base" and plan.wal_segments >= 1
    assert ids(instance) == [1]
    assert point.state == "promoted" and point.time is not None and point.time <= halfway
    assert point.lsn is not None and point.timeline == 2


def test_to_name(env):
    # timeline 1 explicitly: the first PITR archived timeline 2, which `latest` would follow; and no
    # archiving from this copy, so its promotion does not add a timeline to the archive
    instance, point = env.recover(RecoveryTarget.from_options(to_name="after_two", timeline="1"), archive=False)
    assert ids(instance) == [1, 2] and point.state == "promoted"
    instance.stop()


def test_to_xid(env):
    target = RecoveryTarget.from_options(to_xid=str(env.xid_2), timeline="1")
    instance, point = env.recover(target, archive=False)
    assert ids(instance) == [1, 2] and point.state == "promoted"
    instance.stop()


def test_to_lsn_pauses_when_asked(env):
    target = RecoveryTarget.from_options(to_lsn=env.lsn_3, action="pause", timeline="1")
    instance, point = env.recover(target, archive=False)
    assert point.state == "paused" and ids(instance) == [1, 2, 3]
    assert point.lsn is not None and point.lsn >= Lsn.parse(env.lsn_3)
    instance.stop()


def test_refusals_outside_the_window(env):
    scan = repo_wal.scan(env.repo.storage, "main", env.repo.keys)
    later = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
    for target in (
        RecoveryTarget.from_options(to_time=format_time(later)),
        RecoveryTarget.from_options(to_time="2000-01-01T00:00:00Z"),
        RecoveryTarget.from_options(to_lsn="FF/0"),
        RecoveryTarget.from_options(timeline="9"),
    ):
        with pytest.raises(UsageError):
            pitr.plan_recovery(target, [env.backup], scan)


def test_second_pitr_follows_the_new_timeline(env):
    first = _pitr_halfway(env)[2]
    x(first, "INSERT INTO t VALUES (100, 'on timeline 2')")
    wait_archived(first)
    scan = repo_wal.scan(env.repo.storage, "main", env.repo.keys)
    assert 2 in scan.histories  # the promoted server archived its history file
    plan = pitr.plan_recovery(RecoveryTarget.from_options(timeline="latest"), [env.backup], scan)
    assert plan.timeline == 2
    instance, point = env.recover(RecoveryTarget.from_options(timeline="latest"))
    assert ids(instance) == [1, 100] and point.timeline == 3
    instance.stop()
    first.stop()


def test_standby_streams_from_the_primary(env):
    instance, point = env.recover(
        RecoveryTarget.from_options(),
        standby=True,
        primary_conninfo=f"host=127.0.0.1 port={env.primary.port} user=postgres",
        timeline=1,  # the primary's: the archive also holds the PITR timelines of the tests above
    )
    assert point.state == "streaming"
    x(env.primary, "INSERT INTO t VALUES (50, 'streamed') ON CONFLICT DO NOTHING")
    wait_until(lambda: 50 in ids(instance), "row 50 streamed to the standby", timeout=60, interval=0.2)
    assert v(instance, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    instance.stop()
