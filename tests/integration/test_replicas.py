"""`replicas check` and `replica create --from-primary` against a real primary and a real streaming standby.

One primary + one standby (built by opsdb's own pg_basebackup -R path) are shared by the module; each
test leaves replication healthy again (replay resumed, extra slots dropped).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsdb.errors import ToolError
from opsdb.model.lsn import Lsn
from opsdb.model.replication import LagThresholds, Status
from opsdb.ops.replicas.create import create_replica_from_primary
from opsdb.ops.replicas.lag import collect_replicas_report
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.pg.tools import PgTools
from opsdb.proc import LocalRunner
from tests.fixtures.pg import ClusterFactory, free_port, os_user

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


class Pair:
    def __init__(self, primary: Instance, standby: Instance, workdir: Path) -> None:
        self.primary = primary
        self.standby = standby
        self.workdir = workdir

    def config(self, extra_replicas: str = "", **cluster: object) -> Path:
        """An opsdb.toml for this pair; cluster keys (thresholds) as keyword arguments."""
        lines = ["[clusters.main]", f'conninfo = "{self.primary.conninfo()}"']
        lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in cluster.items()]
        lines += ["", "[[clusters.main.replicas]]", 'name = "replica1"', f'conninfo = "{self.standby.conninfo()}"']
        path = self.workdir / f"opsdb-{time.monotonic_ns()}.toml"
        path.write_text("\n".join(lines) + "\n" + extra_replicas)
        return path


def _wait_caught_up(pair: Pair, timeout: float = 30) -> None:
    with connect(pair.primary.conninfo()) as p:
        target = Lsn.parse(p.fetchval("SELECT pg_current_wal_lsn()::text"))
    deadline = time.monotonic() + timeout
    with connect(pair.standby.conninfo()) as s:
        while time.monotonic() < deadline:
            replay = s.fetchval("SELECT pg_last_wal_replay_lsn()::text")
            if replay and Lsn.parse(replay) >= target:
                return
            time.sleep(0.1)
    raise AssertionError(f"standby did not replay up to {target} within {timeout}s")


@pytest.fixture(scope="module")
def pair(pg_bin_dir: Path) -> Iterator[Pair]:
    factory = ClusterFactory(pg_bin_dir)
    standby: Instance | None = None
    try:
        primary = factory()
        target = factory.new_dir() / "standby"
        created = create_replica_from_primary(
            primary.conninfo(),
            target,
            runner=LocalRunner(),
            tools=PgTools(pg_bin_dir),
            os_user=os_user() or "postgres",
            slot="replica1_slot",
            application_name="replica1",
        )
        assert created.primary_conninfo_written
        assert "application_name=replica1" in (target / "postgresql.auto.conf").read_text()
        for attempt in range(3):  # another test may take the port between free_port() and the bind
            standby = Instance(target, free_port(), pg_bin_dir, os_user(), LocalRunner())
            try:
                standby.start(timeout=60)
                break
            except ToolError as exc:
                if "Address already in use" not in exc.stderr_tail or attempt == 2:
                    raise
        pair = Pair(primary, standby, factory.new_dir())
        with connect(primary.conninfo()) as p:
            p.execute("CREATE TABLE filler (id int, pad text)")
        _wait_caught_up(pair)
        yield pair
    finally:
        if standby is not None:
            standby.stop(mode="fast", timeout=30)
        factory.close()


def _check(config: Path, *args: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_")}
    done = subprocess.run(
        [sys.executable, "-m", "opsdb", "--config", str(config), "--json", "replicas", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def _thresholds(**kw: float) -> LagThresholds:
    base = dict(
        warning_bytes=16 * MiB,
        critical_bytes=256 * MiB,
        warning_seconds=60,
        critical_seconds=300,
        slot_retained_warning_bytes=1024**3,
    )
    base.update(kw)
    return LagThresholds(**base)  # type: ignore[arg-type]


def test_healthy_standby_is_ok(pair: Pair) -> None:
    code, doc = _check(pair.config())
    assert code == 0, doc
    assert doc["status"] == "OK"
    (replica,) = doc["replicas"]
    assert replica["name"] == "replica1"
    assert replica["state"] == "streaming"
    # PostgreSQL 18 shows a few hundred bytes the primary wrote on its own since the standby's last status
    # message (744 here, every run); 15 shows 0. Either is far below any lag threshold.
    assert replica["lag_bytes"] < 8192
    # with those bytes unreplayed and no commit to time them, the time lag is unknown (None) rather than 0
    assert replica["lag_seconds"] == (0 if replica["lag_bytes"] == 0 else None)
    assert replica["sync_state"] == "async"  # matched to the primary's pg_stat_replication by application_name
    assert [s["application_name"] for s in doc["senders"]] == ["replica1"]
    (slot,) = doc["slots"]
    assert slot["slot_name"] == "replica1_slot" and slot["active"] is True


def test_idle_primary_does_not_raise_time_lag(pair: Pair) -> None:
    with connect(pair.primary.conninfo()) as p:
        p.execute("INSERT INTO filler VALUES (1, 'x')")
    _wait_caught_up(pair)
    time.sleep(2.5)  # the last replayed commit is now older than the 1 s threshold below
    with connect(pair.standby.conninfo()) as s:
        age = s.fetchval("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8")
    assert age > 2  # a naive now() - last replay time would be past the threshold
    report = collect_replicas_report(
        pair.primary.conninfo(),
        [("replica1", pair.standby.conninfo())],
        _thresholds(warning_seconds=0.5, critical_seconds=1),
    )
    assert report.status is Status.OK, report.summary
    assert report.replicas[0].lag_seconds == 0


def test_paused_replay_goes_critical_then_recovers(pair: Pair) -> None:
    config = pair.config(lag_warning_bytes="512kB", lag_critical_bytes="1MB")
    with connect(pair.standby.conninfo()) as s:
        s.execute("SELECT pg_wal_replay_pause()")
    try:
        with connect(pair.primary.conninfo()) as p:
            p.execute("INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
        code, doc = _check(config)
        assert code == 2, doc
        assert doc["status"] == "CRITICAL"
        replica = doc["replicas"][0]
        assert replica["state"] == "paused"
        assert replica["lag_bytes"] >= MiB
        assert any(">= critical" in r for r in replica["reasons"])
        # the CLI flag overrides the configured critical threshold
        code, doc = _check(config, "--max-lag-bytes", str(1024**3))
        assert code == 1 and doc["status"] == "WARNING", doc
    finally:
        with connect(pair.standby.conninfo()) as s:
            s.execute("SELECT pg_wal_replay_resume()")
    _wait_caught_up(pair)
    code, doc = _check(config)
    assert code == 0, doc
    assert doc["replicas"][0]["lag_bytes"] == 0


def test_inactive_slot_retaining_wal_is_reported(pair: Pair) -> None:
    with connect(pair.primary.conninfo()) as p:
        p.execute("SELECT pg_create_physical_replication_slot('orphan', true)")
        try:
            p.execute("INSERT INTO filler SELECT g, repeat('y', 200) FROM generate_series(1, 5000) g")
            code, doc = _check(pair.config(slot_retained_warning_bytes="256kB"))
            assert code == 1, doc
            assert doc["status"] == "WARNING"
            orphan = next(s for s in doc["slots"] if s["slot_name"] == "orphan")
            assert orphan["active"] is False
            assert orphan["retained_bytes"] >= 256 * 1024
            assert orphan["wal_status"] in ("reserved", "extended")
            assert any(r.startswith("inactive, retaining") for r in orphan["reasons"])
        finally:
            p.execute("SELECT pg_drop_replication_slot('orphan')")
    _wait_caught_up(pair)


def test_unreachable_replica_is_critical_with_reason(pair: Pair) -> None:
    dead = f'\n[[clusters.main.replicas]]\nname = "ghost"\nconninfo = "host=127.0.0.1 port={free_port()} user=postgres connect_timeout=2"\n'
    code, doc = _check(pair.config(extra_replicas=dead))
    assert code == 2, doc
    ghost = next(r for r in doc["replicas"] if r["name"] == "ghost")
    assert ghost["state"] == "unreachable"
    assert "Connection refused" in ghost["reasons"][0] or "connect" in ghost["reasons"][0]
    assert "ghost: unreachable" in doc["summary"]


def test_unreachable_primary_is_unknown(pair: Pair) -> None:
    report = collect_replicas_report(f"host=127.0.0.1 port={free_port()} user=postgres", [], _thresholds())
    assert report.status is Status.UNKNOWN
    assert report.exit_code == 3
    assert "primary unreachable" in report.summary


def test_human_output_lists_the_replica(pair: Pair) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_")}
    done = subprocess.run(
        [sys.executable, "-m", "opsdb", "--config", str(pair.config()), "replicas", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    assert first.startswith("REPLICAS OK:")
    assert "| 'replica1_lag_bytes'=0B;16777216;268435456;0 'replica1_lag_seconds'=0.000s;60;300;0" in first
    assert any(line.startswith("replica1") and "streaming" in line for line in rest)
