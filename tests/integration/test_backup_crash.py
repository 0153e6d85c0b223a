"""Crash safety and locking of `opsdb backup`, with real processes: kill -9 midway, two concurrent runs,
a stale lock of a dead run on another host."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsdb.errors import RepositoryUnavailable
from opsdb.ops.backup.physical import BackupRequest, run_backup
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from opsdb.repo import catalog, layout
from opsdb.repo.envelope import Codec
from opsdb.storage.local import LocalStorage
from tests.integration.backup_env import OPSDB, make_big_table, opsdb, opsdb_json, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(pg_cluster: Instance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    make_big_table(pg_cluster.conninfo(), 160)
    work = tmp_path_factory.mktemp("crash")
    repo = work / "repo"
    config = write_config(work, url=f"file://{repo}", conninfo=pg_cluster.conninfo())
    yield {"config": config, "repo": repo}


SLOT_COUNT = "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'opsdb_backup_%'"


def _start_backup(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [OPSDB, "--config", str(config), "--json", "backup"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _bytes_in_flight(repo: Path) -> int:
    """Bytes already written for uncommitted objects (temp files of puts in progress, and published objects)."""
    root = repo / "clusters" / "main" / "backups"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def test_killed_backup_leaves_nothing_complete_and_the_next_succeeds(env: dict[str, Any], pg_cluster: Instance) -> None:
    storage = LocalStorage(str(env["repo"]))
    before = catalog.committed_ids(storage, "main")
    proc = _start_backup(env["config"])
    try:
        _wait_for(lambda: _bytes_in_flight(env["repo"]) > 2 * 1024 * 1024 or proc.poll() is not None, "bytes stored")
        assert proc.poll() is None, f"backup finished before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    # the slot-holding psql reads end of input once opsdb is gone: its session and slot end with it
    with connect(pg_cluster.conninfo()) as c:
        _wait_for(lambda: not c.fetchval(SLOT_COUNT), "the killed run's replication slot to be dropped", timeout=30)
    assert {b["id"] for b in opsdb_json(env["config"], "backups", "list")["backups"]} == before
    ids = {p.name for p in (env["repo"] / "clusters" / "main" / "backups").iterdir()}
    assert ids - before, "the killed run stored nothing: the test did not kill it midway"
    # the next run takes over the dead run's lock at once, cleans its leftovers and commits
    result = opsdb_json(env["config"], "backup")
    listed = [b["id"] for b in opsdb_json(env["config"], "backups", "list")["backups"]]
    assert result["id"] in listed and len(listed) == len(before) + 1
    assert catalog.find_leftovers(storage, "main", kind="physical") == []
    assert not list(Path(tempfile.gettempdir()).glob(f"opsdb-backup-{proc.pid}-*")), "killed run's work dir kept"


def test_second_concurrent_backup_refuses_naming_the_holder(env: dict[str, Any]) -> None:
    lock = env["repo"] / layout.lock_object("main", "backup")
    first = _start_backup(env["config"])
    try:
        _wait_for(lambda: lock.exists() or first.poll() is not None, "the first backup's lock")
        second = opsdb(env["config"], "backup", check=False)
        assert first.poll() is None, "the first backup ended before the second started: test inconclusive"
        assert second.returncode == 1
        assert (
            f"backup of cluster main is already running on host {socket.gethostname()} pid {first.pid}" in second.stderr
        )
        assert "lock expires at" in second.stderr
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert json.loads(out)["status"] == "complete"
    assert not lock.exists()


def test_expired_lock_of_another_host_is_taken_over(env: dict[str, Any]) -> None:
    lock = env["repo"] / layout.lock_object("main", "backup")
    past = datetime.now(UTC) - timedelta(hours=1)
    stale = {
        "owner": "dead",
        "kind": "backup",
        "cluster": "main",
        "host": "other-host",
        "pid": 4242,
        "started": past.isoformat(),
        "heartbeat": past.isoformat(),
        "expires": (past + timedelta(minutes=5)).isoformat(),
    }
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(stale))
    result = opsdb(env["config"], "--json", "backup")
    assert json.loads(result.stdout)["status"] == "complete"
    assert "taking over an expired lock" in result.stderr and "other-host pid 4242" in result.stderr
    # a fresh lock of another host is respected
    fresh = dict(
        stale, expires=(datetime.now(UTC) + timedelta(minutes=5)).isoformat(), started=datetime.now(UTC).isoformat()
    )
    lock.write_text(json.dumps(fresh))
    refused = opsdb(env["config"], "backup", check=False)
    lock.unlink()
    assert refused.returncode == 1 and "running on host other-host pid 4242" in refused.stderr


class FailingStorage(LocalStorage):
    """A real file:// repository whose writes of big objects break after some bytes (a network outage)."""

    def put(self, key, chunks, *, if_absent=False, metadata=None):  # type: ignore[no-untyped-def]
        def breaking():  # type: ignore[no-untyped-def]
            seen = 0
            for chunk in chunks:
                seen += len(chunk)
                if seen > 3 * 1024 * 1024:
                    raise RepositoryUnavailable(f"unable to put {key}: connection reset (injected)")
                yield chunk

        return super().put(key, breaking() if key.endswith(".tar") else chunks, if_absent=if_absent, metadata=metadata)


def test_storage_failure_midway_fails_cleanly(env: dict[str, Any], pg_cluster: Instance, tmp_path: Path) -> None:
    storage = FailingStorage(str(tmp_path / "repo"))
    request = BackupRequest("main", pg_cluster.conninfo(), pg_cluster.tools.bin_dir)
    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable, match="injected"):
        run_backup(request, storage=storage, codec=Codec("none", 0), runner=LocalRunner())
    assert time.monotonic() - started < 120
    assert catalog.committed_ids(storage, "main") == set()
    assert storage.stat(layout.lock_object("main", "backup")) is None  # released on failure
    with connect(pg_cluster.conninfo()) as c:  # pg_basebackup is gone: no walsender left behind
        deadline = time.monotonic() + 30
        while (
            c.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'")
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert c.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'") == 0
        assert c.fetchval("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'opsdb_backup_%'") == 0
