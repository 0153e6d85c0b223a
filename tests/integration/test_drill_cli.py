"""The drill, verify and report commands as operators and CI run them: exit codes and JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from opsdb.repo import layout
from opsdb.storage.local import LocalStorage
from tests.integration.drill_env import SECRET, flip_byte, make_primary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cli_env(pg_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.fixtures.pg import ClusterFactory

    factory = ClusterFactory(pg_bin_dir)
    base = tmp_path_factory.mktemp("cli")
    repo = base / "repo"
    try:
        primary = make_primary(factory, [LocalStorage(repo)])
        primary.switch_and_push()
        backup = primary.backup()
        primary.switch_and_push()
        beats = []
        for _ in range(2):
            beats.append(primary.heartbeat())
            primary.switch_and_push()
        config = base / "opsdb.toml"
        config.write_text(
            f'[repository]\nurl = "file://{repo}"\n[encryption]\nkey_env = "OPSDB_TEST_KEY"\nrequired = true\n'
            f'[clusters.main]\nconninfo = "{primary.conninfo}"\npg_bin_dir = "{pg_bin_dir}"\n'
            '[drill]\nlargest_tables = 2\n[[drill.assertions]]\nname = "heartbeats"\ndatabase = "postgres"\n'
            'sql = "select count(*) >= 1 from opsdb_heartbeat"\nexpect = "t"\n'
        )
        yield {"config": config, "repo": repo, "backup": backup, "beats": beats, "primary": primary, "base": base}
    finally:
        factory.close()


def opsdb(env: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsdb", "--config", str(env["config"]), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPSDB_TEST_KEY": SECRET.hex()},
    )


def test_drill_passes_and_reports_are_kept_and_listed(cli_env: Any) -> None:
    h1, h2 = cli_env["beats"]
    target = (h1.time + (h2.time - h1.time) / 2).isoformat()
    out = opsdb(cli_env, "--json", "drill", "--to-time", target, "--report-dir", str(cli_env["base"] / "reports"))
    doc = json.loads(out.stdout)
    assert out.returncode == 0, [c for c in doc["checks"] if c["status"] == "fail"]
    assert list(doc) == [
        "id",
        "result",
        "target_time",
        "recovered_time",
        "rpo_seconds",
        "rto_seconds",
        "phases",
        "checks",
        "report_files",
    ]
    assert doc["result"] == "pass" and doc["recovered_time"].startswith(h1.time.strftime("%Y-%m-%dT%H:%M:%S"))
    assert "assertion: heartbeats" in {c["name"] for c in doc["checks"]}
    stages = [line.split(" phase ", 1)[1].split(" ", 1)[0] for line in out.stderr.splitlines() if ": phase " in line]
    assert stages == ["plan", "scratch", "fetch", "pg_verifybackup", "replay", "checks", "teardown"], out.stderr
    listed = opsdb(cli_env, "--json", "report", "list")
    assert listed.returncode == 0 and json.loads(listed.stdout)["reports"][0]["id"] == doc["id"]
    assert "RTO min/median/max" in opsdb(cli_env, "report", "list").stdout
    html = opsdb(cli_env, "report", "show", doc["id"], "--format", "html")
    assert html.returncode == 0 and "<svg" in html.stdout
    assert opsdb(cli_env, "report", "show", "drill-nope").returncode == 1
    assert opsdb(cli_env, "drill", "--to-time", "2026-01-01 10:00").returncode == 2  # no offset: refused


@pytest.fixture(scope="module")
def damaged_env(cli_env: Any) -> Any:
    """A copy of the repository whose backup tar has one byte flipped: the tests that need it do not
    depend on running after (or before) the ones that need the intact repository."""
    repo = cli_env["base"] / "repo-damaged"
    shutil.copytree(cli_env["repo"], repo)
    tar_key = layout.backup_object("main", cli_env["backup"].id, "base.tar")
    flip_byte(repo / tar_key)
    config = cli_env["base"] / "opsdb-damaged.toml"
    config.write_text(cli_env["config"].read_text().replace(f"file://{cli_env['repo']}", f"file://{repo}"))
    return {**cli_env, "config": config, "repo": repo, "tar_key": tar_key}


def test_verify_exit_codes_and_named_objects(cli_env: Any, damaged_env: Any) -> None:
    ok = opsdb(cli_env, "--json", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["result"] == "pass"
    bad = opsdb(damaged_env, "verify", "--backup", damaged_env["backup"].id)
    assert bad.returncode == 1
    assert f"BAD {damaged_env['tar_key']}:" in bad.stdout


def test_drill_fails_with_exit_1_naming_the_check(damaged_env: Any) -> None:
    out = opsdb(damaged_env, "--json", "drill")  # the backup object no longer authenticates
    assert out.returncode == 1
    failed = [c for c in json.loads(out.stdout)["checks"] if c["status"] == "fail"]
    assert failed and failed[0]["name"] == "drill completed" and "base.tar" in failed[0]["detail"]
