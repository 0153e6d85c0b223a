"""Prometheus exposition: format, the samples built from catalog/WAL/drills/replicas/jobs, atomic textfile."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsdb.automation.history import RunRecord
from opsdb.errors import UsageError
from opsdb.model.lsn import parse_wal_name
from opsdb.ops.health import metrics
from opsdb.render.metrics import Sample, render
from opsdb.repo.wal import ArchivedFile
from opsdb.storage.base import ObjectInfo

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_render_groups_families_and_escapes():
    text = render(
        [
            Sample("opsdb_x", 1, {"cluster": "main"}, "An x."),
            Sample("opsdb_y", 2.5),
            Sample("opsdb_x", 3, {"cluster": 'we"ird\\\n'}, "An x."),
            Sample("opsdb_y", float("nan")),
        ]
    )
    assert text == (
        "# HELP opsdb_x An x.\n# TYPE opsdb_x gauge\n"
        'opsdb_x{cluster="main"} 1\n'
        'opsdb_x{cluster="we\\"ird\\\\\\n"} 3\n'
        "# TYPE opsdb_y gauge\nopsdb_y NaN\n"
    )
    with pytest.raises(ValueError):
        render([Sample("bad-name", 1)])
    with pytest.raises(ValueError):
        render([Sample("ok", 1, {"__reserved": "x"})])


def samples_by_name(samples):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


def test_backup_samples_pick_the_newest_complete():
    records = [
        {
            "id": "a",
            "kind": "physical",
            "status": "complete",
            "start_time": "2026-11-20T02:00:00Z",
            "stop_time": "2026-11-20T02:10:00Z",
            "size_bytes": 100,
            "stored_bytes": 40,
        },
        {
            "id": "b",
            "kind": "physical",
            "status": "complete",
            "start_time": "2026-11-21T02:00:00Z",
            "stop_time": "2026-11-21T02:30:00Z",
            "size_bytes": 200,
            "stored_bytes": 80,
        },
        {
            "id": "c",
            "kind": "logical",
            "status": "complete",
            "start_time": "2026-11-21T03:00:00Z",
            "stop_time": "2026-11-21T03:01:00Z",
            "size_bytes": 7,
        },
    ]
    got = samples_by_name(metrics.backup_samples("main", records))
    phys = (("cluster", "main"), ("kind", "physical"))
    assert got[("opsdb_backups", phys)] == 2
    assert (
        got[("opsdb_backup_last_success_timestamp_seconds", phys)]
        == datetime(2026, 11, 21, 2, 30, tzinfo=UTC).timestamp()
    )
    assert got[("opsdb_backup_last_duration_seconds", phys)] == 1800
    assert got[("opsdb_backup_last_size_bytes", phys)] == 200 and got[("opsdb_backup_last_stored_bytes", phys)] == 80
    assert got[("opsdb_backups", (("cluster", "main"), ("kind", "logical")))] == 1


def test_wal_samples_age():
    files = [
        ArchivedFile(parse_wal_name(name), ObjectInfo(f"k/{name}", 1, mtime=(NOW - timedelta(seconds=age)).timestamp()))
        for name, age in [("000000010000000000000001", 600), ("000000010000000000000002", 90), ("00000002.history", 5)]
    ]
    got = samples_by_name(metrics.wal_samples("main", files, NOW))
    assert got[("opsdb_wal_last_archived_age_seconds", (("cluster", "main"),))] == 90
    assert (
        got[
            (
                "opsdb_wal_last_archived_info",
                (("cluster", "main"), ("segment", "000000010000000000000002"), ("timeline", "1")),
            )
        ]
        == 1
    )
    assert metrics.wal_samples("main", [], NOW) == []


def test_job_samples_from_history():
    records = [
        RunRecord("nightly", "s", "2026-11-20T02:00:00+00:00", "2026-11-20T02:20:00+00:00", 0, "ok", 1200.0, "backup"),
        RunRecord(
            "nightly", "s", "2026-11-21T02:00:00+00:00", "2026-11-21T02:05:00+00:00", 1, "failed", 300.0, "backup"
        ),
        RunRecord(
            "nightly", "s", "2026-11-21T03:00:00+00:00", "2026-11-21T03:00:00+00:00", None, "skipped", 0.0, "backup"
        ),
    ]
    got = samples_by_name(metrics.job_samples(records))
    j = (("job", "nightly"),)
    assert got[("opsdb_job_last_success", j)] == 0 and got[("opsdb_job_last_exit_code", j)] == 1
    assert got[("opsdb_job_last_duration_seconds", j)] == 300
    assert got[("opsdb_job_last_success_timestamp_seconds", j)] == datetime(2026, 11, 20, 2, 20, tzinfo=UTC).timestamp()


def test_textfile_is_written_atomically(tmp_path):
    target = tmp_path / "opsdb.prom"
    target.write_text("old\n")
    metrics.write_textfile(target, "opsdb_up 1\n")
    assert target.read_text() == "opsdb_up 1\n"
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["opsdb.prom"]  # no temp file left behind
    with pytest.raises(UsageError, match="must end in .prom"):
        metrics.write_textfile(tmp_path / "x.txt", "")
    with pytest.raises(UsageError, match="does not exist"):
        metrics.write_textfile(tmp_path / "nope" / "x.prom", "")


def test_collect_from_settings_on_an_empty_repository(tmp_path):
    from opsdb.config import Settings

    settings = Settings(
        repository={"url": f"file://{tmp_path}/repo"}, clusters={"main": {"conninfo": "host=127.0.0.1"}}
    )
    (tmp_path / "repo").mkdir()
    records = [RunRecord("nightly", "s", "a", "2026-11-21T02:05:00+00:00", 0, "ok", 5.0, "backup")]
    text = metrics.collect_from_settings(settings, ["main"], job_records=records, now=NOW)
    assert 'opsdb_metrics_source_up{cluster="main",source="catalog"} 1' in text
    assert 'opsdb_backups{cluster="main",kind="physical"} 0' in text
    assert 'opsdb_job_last_success{job="nightly"} 1' in text
    assert text.endswith(f"opsdb_metrics_generated_timestamp_seconds {int(NOW.timestamp())}\n")
    assert Path(tmp_path / "repo").exists()


def test_drill_and_replica_samples_and_replicas_via_settings(tmp_path):
    from types import SimpleNamespace as NS

    from opsdb.config import Settings
    from opsdb.model.results import Status

    failed = NS(finished_at=NOW, passed=False, rto_seconds=42.0, rpo_seconds=3.5)
    passed = NS(finished_at=NOW - timedelta(days=1), passed=True, rto_seconds=40.0, rpo_seconds=1.0)
    got = samples_by_name(metrics.drill_samples("main", [failed, passed]))
    c = (("cluster", "main"),)
    assert got[("opsdb_drill_last_success", c)] == 0 and got[("opsdb_drill_rto_seconds", c)] == 42
    assert got[("opsdb_drill_last_success_timestamp_seconds", c)] == passed.finished_at.timestamp()

    report = NS(
        status=Status.WARNING,
        replicas=(
            NS(name="r1", reachable=True, lag_bytes=1024, lag_seconds=2.0),
            NS(name="r2", reachable=False, lag_bytes=None, lag_seconds=None),
        ),
        slots=(NS(slot_name="s1", retained_bytes=4096),),
    )
    settings = Settings(
        repository={"url": f"file://{tmp_path}/repo"},
        clusters={
            "main": {
                "conninfo": "host=127.0.0.1",
                "replicas": [{"name": "r1", "conninfo": "port=1"}, {"name": "r2", "conninfo": "port=2"}],
            }
        },
    )
    (tmp_path / "repo").mkdir()
    calls = []

    def fake(conninfo, pairs, thresholds):
        calls.append(pairs)
        return report

    text = metrics.collect_from_settings(settings, ["main"], now=NOW, replicas_fn=fake)
    assert calls == [[("r1", "port=1"), ("r2", "port=2")]]
    assert 'opsdb_replicas_status{cluster="main"} 1' in text
    assert 'opsdb_replica_lag_bytes{cluster="main",replica="r1"} 1024' in text
    assert 'opsdb_replica_up{cluster="main",replica="r2"} 0' in text
    assert 'opsdb_replication_slot_retained_bytes{cluster="main",slot="s1"} 4096' in text
