"""opsdb backup --from-standby: a real streaming standby is backed up and the backup restores the primary's data."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.ops.replicas.create import create_replica_from_primary
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.pg.tools import PgTools
from opsdb.proc import LocalRunner
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.integration.backup_env import make_tables, opsdb, opsdb_json, table_checksums, write_config

pytestmark = pytest.mark.integration
TABLES = ["orders", "customers"]


@pytest.fixture(scope="module")
def pair(pg_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    factory = ClusterFactory(pg_bin_dir)
    standby: Instance | None = None
    try:
        primary = factory()
        make_tables(primary.conninfo())
        target = factory.new_dir() / "standby"
        create_replica_from_primary(
            primary.conninfo(),
            target,
            runner=LocalRunner(),
            tools=PgTools(pg_bin_dir),
            os_user=os_user() or "postgres",
            slot="standby_slot",
            application_name="standby1",
        )
        standby = Instance(target, free_port(), pg_bin_dir, os_user(), LocalRunner())
        standby.start(timeout=60)
        work = tmp_path_factory.mktemp("standby")
        replicas = f'\n[[clusters.main.replicas]]\nname = "standby1"\nconninfo = "{standby.conninfo()}"\n'
        config = write_config(work, url=f"file://{work / 'repo'}", conninfo=primary.conninfo(), extra=replicas)
        yield {"primary": primary, "standby": standby, "config": config, "bin_dir": pg_bin_dir}
    finally:
        if standby is not None:
            standby.stop(mode="fast", timeout=30)
        factory.close()


def _caught_up(primary: Instance, standby: Instance, timeout: float = 30) -> None:
    with connect(primary.conninfo()) as p:
        lsn = p.fetchval("SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect(standby.conninfo()) as s:
            if s.fetchval("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(lsn),)):
                return
        time.sleep(0.1)
    raise AssertionError("standby did not catch up")


def test_backup_from_standby_restores_the_primarys_data(pair: dict[str, Any]) -> None:
    _caught_up(pair["primary"], pair["standby"])
    backup = opsdb_json(pair["config"], "backup", "--from-standby")
    shown = opsdb_json(pair["config"], "backups", "show", backup["id"])
    assert shown["from_standby"] is True
    base = make_temp_dir("opsdb-restore-")
    port = free_port()
    restored = Instance(base / "data", port, pair["bin_dir"], os_user(), LocalRunner())
    try:
        opsdb(pair["config"], "restore", "--target-dir", str(base / "data"), "--start", "--port", str(port))
        assert table_checksums(restored.conninfo(), TABLES) == table_checksums(pair["primary"].conninfo(), TABLES)
    finally:
        restored.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_from_standby_without_a_standby_is_refused(pair: dict[str, Any], tmp_path: Path) -> None:
    config = write_config(tmp_path, url=f"file://{tmp_path / 'repo'}", conninfo=pair["primary"].conninfo())
    proc = opsdb(config, "backup", "--from-standby", check=False)
    assert proc.returncode == 2 and "no replicas configured" in proc.stderr
    assert not (tmp_path / "repo").exists()
