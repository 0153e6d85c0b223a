"""`replica create` argument rules and `replicas check` with no server (no PostgreSQL needed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _opsdb(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "opsdb.toml"
    config.write_text(
        f'[clusters.main]\nconninfo = "host=127.0.0.1 port={_free_port()} user=postgres connect_timeout=2"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_")}
    return subprocess.run(
        [sys.executable, "-m", "opsdb", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_replica_create_needs_exactly_one_source(tmp_path: Path) -> None:
    done = _opsdb(tmp_path, "replica", "create", "--target-dir", str(tmp_path / "r"))
    assert done.returncode == 2 and "exactly one of --from-primary or --from-backup" in done.stderr
    done = _opsdb(
        tmp_path, "replica", "create", "--target-dir", str(tmp_path / "r"), "--from-primary", "--from-backup", "latest"
    )
    assert done.returncode == 2


def test_replica_create_from_backup_of_an_empty_repository_is_refused(tmp_path: Path) -> None:
    done = _opsdb(tmp_path, "replica", "create", "--target-dir", str(tmp_path / "r"), "--from-backup", "latest")
    assert done.returncode == 2 and "no complete physical backup" in done.stderr
    assert not (tmp_path / "r").exists()


def test_bad_slot_name_is_refused_before_anything_runs(tmp_path: Path) -> None:
    target = tmp_path / "r"
    done = _opsdb(tmp_path, "replica", "create", "--target-dir", str(target), "--from-primary", "--slot", "Bad-Name")
    assert done.returncode == 2 and "invalid slot name" in done.stderr
    assert not target.exists()


def test_replicas_check_unreachable_primary_is_unknown(tmp_path: Path) -> None:
    done = _opsdb(tmp_path, "--json", "replicas", "check")
    assert done.returncode == 3, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "UNKNOWN" and doc["replicas"] == [] and doc["slots"] == []
    assert doc["primary_error"]


def test_negative_threshold_is_a_usage_error(tmp_path: Path) -> None:
    done = _opsdb(tmp_path, "replicas", "check", "--max-lag-bytes", "-1")
    assert done.returncode == 2 and "--max-lag-bytes" in done.stderr
