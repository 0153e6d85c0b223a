"""`opsdb retention apply [--dry-run]` end to end on a file:// repository (catalog written through the envelope)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsdb.model.lsn import Lsn, segment_name
from opsdb.repo import envelope, layout
from opsdb.storage.local import LocalStorage

SEG = 16 * 1024 * 1024


def setup_repo(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    storage = LocalStorage(str(repo))
    codec = envelope.Codec("none", 0)
    now = datetime.now(UTC)
    for n in range(5):
        start = now - timedelta(days=5 - n)
        rec = {
            "id": f"b{n}",
            "kind": "physical",
            "cluster": "main",
            "status": "complete",
            "start_time": start.isoformat(),
            "stop_time": (start + timedelta(minutes=10)).isoformat(),
            "start_lsn": str(Lsn((10 * n + 1) * SEG)),
            "timeline": 1,
        }
        storage.put(layout.backup_object("main", rec["id"], "base.tar"), [b"data"])
        envelope.put_json(storage, layout.catalog_entry("main", rec["id"]), rec, codec)
    for segno in range(45):
        storage.put(layout.wal_object("main", segment_name(1, segno)), [b"w"])
    config = tmp_path / "opsdb.toml"
    config.write_text(
        f'[repository]\nurl = "file://{repo}"\n[clusters.main]\nconninfo = "host=127.0.0.1"\n'
        '[clusters.main.retention]\nkeep_last = 2\nmin_age = "1h"\n'
    )
    return repo, config


def files(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()}


def opsdb(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opsdb", "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


def test_dry_run_then_apply(tmp_path):
    repo, config = setup_repo(tmp_path)
    before = files(repo)
    dry = opsdb(config, "retention", "apply", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing changed" in dry.stdout
    assert "delete backup b0" in dry.stdout and "keep   backup b4" in dry.stdout
    assert f"would delete WAL {segment_name(1, 0)} .. {segment_name(1, 30)} (31 files)" in dry.stdout
    assert files(repo) == before

    real = opsdb(config, "--json", "retention", "apply")
    assert real.returncode == 0, real.stderr
    doc = json.loads(real.stdout)
    assert doc["summary"]["backups_deleted"] == 3 and doc["summary"]["wal_files_deleted"] == 31
    assert [b["action"] for b in doc["backups"]] == ["delete", "delete", "delete", "keep", "keep"]
    left = files(repo)
    assert not any("b0" in f or "b1" in f or "b2" in f for f in left)
    assert not any("locks/" in f or "deleting/" in f for f in left)


def test_held_lock_refuses_and_changes_nothing(tmp_path):
    repo, config = setup_repo(tmp_path)
    LocalStorage(str(repo)).put(layout.lock_object("main", "backup"), [b'{"holder": "backup", "pid": 1}'])
    before = files(repo)
    proc = opsdb(config, "retention", "apply")
    assert proc.returncode == 1
    assert "backup lock is held (holder backup, pid 1)" in proc.stderr
    assert files(repo) == before
