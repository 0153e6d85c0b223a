"""`opsdb retention apply [--dry-run]` end to end on a file:// repository (records committed through repo.catalog)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsdb.model.catalog import BackupRecord, new_backup_id
from opsdb.model.lsn import Lsn, segment_name
from opsdb.repo import catalog, envelope, layout
from opsdb.repo.lock import RepositoryLock
from opsdb.storage.local import LocalStorage

SEG = 16 * 1024 * 1024


def setup_repo(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    storage = LocalStorage(str(repo))
    codec = envelope.Codec("none", 0)
    now = datetime.now(UTC)
    ids = []
    for n in range(5):
        start = now - timedelta(days=5 - n)
        rec = BackupRecord(
            id=new_backup_id(start, "physical"),
            cluster="main",
            kind="physical",
            start_time=start,
            stop_time=start + timedelta(minutes=10),
            size_bytes=4,
            stored_bytes=4,
            compression="none",
            encrypted=False,
            timeline=1,
            start_lsn=Lsn((10 * n + 1) * SEG),
        )
        storage.put(layout.backup_object("main", rec.id, "base.tar"), [b"data"])
        catalog.commit(storage, rec, codec)
        ids.append(rec.id)
    for segno in range(45):
        storage.put(layout.wal_object("main", segment_name(1, segno)), [b"w"])
    config = tmp_path / "opsdb.toml"
    config.write_text(
        f'[repository]\nurl = "file://{repo}"\n[clusters.main]\nconninfo = "host=127.0.0.1"\n'
        '[clusters.main.retention]\nkeep_last = 2\nmin_age = "1h"\n'
    )
    return repo, config, ids


def files(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()}


def opsdb(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opsdb", "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


def test_dry_run_then_apply(tmp_path):
    repo, config, ids = setup_repo(tmp_path)
    before = files(repo)
    dry = opsdb(config, "retention", "apply", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing changed" in dry.stdout
    assert f"delete backup {ids[0]}" in dry.stdout and f"keep   backup {ids[4]}" in dry.stdout
    assert f"would delete WAL {segment_name(1, 0)} .. {segment_name(1, 30)} (31 files)" in dry.stdout
    assert files(repo) == before

    real = opsdb(config, "--json", "retention", "apply")
    assert real.returncode == 0, real.stderr
    doc = json.loads(real.stdout)
    assert doc["summary"]["backups_deleted"] == 3 and doc["summary"]["wal_files_deleted"] == 31
    assert [b["action"] for b in doc["backups"]] == ["delete", "delete", "delete", "keep", "keep"]
    left = files(repo)
    assert not any(backup_id in f for f in left for backup_id in ids[:3])
    assert any(ids[3] in f for f in left) and any(ids[4] in f for f in left)
    assert not any("locks/" in f or "deleting/" in f for f in left)


def test_running_backup_refuses_and_changes_nothing(tmp_path):
    repo, config, _ = setup_repo(tmp_path)
    # a backup holding its lock on another host (a dead local pid would be taken over at once)
    RepositoryLock(LocalStorage(str(repo)), "main", "backup", host="db9", pid=4242, heartbeat_interval=0).acquire()
    before = files(repo)
    proc = opsdb(config, "retention", "apply")
    assert proc.returncode == 1
    assert "unable to apply retention to cluster main: backup of cluster main is already running on host db9" in (
        proc.stderr
    )
    assert files(repo) == before
