"""How a drill's scratch server gets WAL: `opsdb wal-fetch` only when the server's user can really run it."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from opsdb.ops.proof.drill_run import _wal_fetch_command
from tests.fakes import FakeRunner


@pytest.fixture
def exe(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "opsdb"
    path.write_text("#!/bin/sh\n")
    monkeypatch.setenv("OPSDB_EXECUTABLE", str(path))
    return path


def settings(tmp_path: Path) -> types.SimpleNamespace:
    return types.SimpleNamespace(config_path=tmp_path / "opsdb.toml")


def is_version(cmd) -> bool:
    return cmd.argv[-1] == "--version"


def test_wal_fetch_when_the_user_runs_opsdb_and_reads_the_repository(tmp_path, exe):
    runner = FakeRunner().script(is_version, returncode=0).script(lambda c: "wal-fetch" in c.argv, returncode=1)
    command = _wal_fetch_command(settings(tmp_path), "main", "postgres", runner)
    assert command.startswith(str(exe)) and 'wal-fetch "%f" "%p"' in command
    assert any("wal-fetch" in argv for argv in runner.argvs)


def test_staging_when_the_user_cannot_execute_opsdb(tmp_path, exe):
    # runuser's own "failed to execute ... Permission denied" exits 1, like "not archived": never trust it alone
    runner = FakeRunner().script(lambda c: True, returncode=1, stderr=b"runuser: failed to execute: Permission denied")
    assert _wal_fetch_command(settings(tmp_path), "main", "postgres", runner) == ""


def test_staging_when_the_user_cannot_read_the_config_or_repository(tmp_path, exe):
    runner = FakeRunner().script(is_version, returncode=0).script(lambda c: "wal-fetch" in c.argv, returncode=128)
    assert _wal_fetch_command(settings(tmp_path), "main", "postgres", runner) == ""
