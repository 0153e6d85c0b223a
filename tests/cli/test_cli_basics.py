"""The CLI's outside: version, help, usage errors (exit 2, one line, no traceback), --json purity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsdb import __version__


def opsdb(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "opsdb", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=60
    )


def test_version():
    result = opsdb("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"opsdb {__version__}"


def test_help_lists_every_command_group():
    result = opsdb("--help")
    assert result.returncode == 0
    for command in (
        "key",
        "check",
        "backup",
        "dump",
        "backups",
        "wal-push",
        "wal-fetch",
        "info",
        "restore",
        "restore-dump",
        "verify",
        "heartbeat",
        "drill",
        "report",
        "retention",
        "schedule",
        "playbook",
        "pgbouncer",
        "replicas",
        "metrics",
        "demo",
    ):
        assert f" {command} " in result.stdout, command


@pytest.mark.parametrize(
    "args",
    [["no-such-command"], ["restore"], ["backups", "show"], ["--cluster"], ["backup", "--bogus-flag"]],
)
def test_usage_errors_exit_2_with_one_line_and_no_traceback(args):
    result = opsdb(*args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("opsdb: error:")]
    assert len(errors) == 1, result.stderr
    assert result.stdout == ""


def test_bad_config_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[compression]\nalgorithm = "lz9"\n[clusters.main]\nconninfo = "host=127.0.0.1"\n')
    result = opsdb("--config", str(config), "--json", "backups", "list")
    assert result.returncode == 2
    assert "compression.algorithm" in result.stderr
    assert "Traceback" not in result.stderr
    # with --json a failure is still exactly one JSON object on stdout
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 2 and "compression.algorithm" in doc["error"]
    assert result.stdout.count("\n") == 1


def test_missing_config_file_exits_2(tmp_path):
    result = opsdb("--config", str(tmp_path / "missing.toml"), "backups", "list")
    assert result.returncode == 2
    assert "missing.toml" in result.stderr


def test_config_from_env_var(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[repository]\nurl = "nope://x"\n')
    result = opsdb("backups", "list", env={"OPSDB_CONFIG": str(config)})
    assert result.returncode == 2
    assert "repository.url" in result.stderr


def test_json_output_is_one_object_on_stdout(tmp_path):
    key = tmp_path / "k.key"
    result = opsdb("--json", "key", "generate", str(key))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    assert result.stdout.count("\n") == 1
