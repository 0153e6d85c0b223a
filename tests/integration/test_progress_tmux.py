"""Progress as an operator sees it in a terminal (tmux, read back with capture-pane): a backup, a restore
and a verify show a percentage, IEC amounts, the average rate and an ETA; without a terminal, nothing
but the log lines: start, phases and end, here as JSON lines (`--log-format json`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from tests.fixtures.pg import make_temp_dir
from tests.gate import missing
from tests.integration.backup_env import OPSDB, opsdb, write_config

pytestmark = pytest.mark.integration

BAR = re.compile(
    r"(\d{1,3})%\s+[\d.]+ (?:B|KiB|MiB|GiB)/[\d.]+ (?:KiB|MiB|GiB)\s+[\d.]+ (?:B|KiB|MiB|GiB)/s\s+ETA \d+:\d\d"
)


@pytest.fixture(scope="module")
def env(pg_cluster: Instance, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # ~160 MiB of poorly compressible rows and gzip: long enough to be seen on any machine
    with connect(pg_cluster.conninfo()) as c:
        c.execute(
            "CREATE TABLE bulk AS SELECT g AS id, "
            "(SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 40) i) AS payload "
            "FROM generate_series(1, 120000) g"
        )
    work = tmp_path_factory.mktemp("progress")
    config = write_config(
        work, url=f"file://{work}/repo", conninfo=pg_cluster.conninfo(), encrypted=True, compression="gzip"
    )
    return {"config": config, "work": work}


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Any]:
    if shutil.which("tmux") is None:
        missing("tmux is not installed (scripts/test.sh installs Debian's tmux as root)")
    socket = f"opsdb-test-{tmp_path.name}"

    def run(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30).stdout

    yield run
    run("kill-server")


def _watch(tmux: Any, command: str, done: str, seconds: float = 240, *, bars_expected: bool = True) -> list[str]:
    """Run `command` in a 150x12 terminal; every bar line seen until `done` shows up on the screen."""
    # pytest exports COLUMNS=80; a login shell in a real terminal does not (rich would wrap at 80)
    tmux("new-session", "-d", "-s", "op", "-x", "150", "-y", "12", f"env -u COLUMNS -u LINES {command}; sleep 600")
    bars: list[str] = []
    screens: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded
        screen = tmux("capture-pane", "-p", "-t", "op")
        bars += [line for line in screen.splitlines() if BAR.search(line)]
        if screen.strip() and (not screens or screens[-1] != screen):
            screens.append(screen)
        if done in screen:
            tmux("kill-session", "-t", "op")
            print(
                "\n".join(["--- a screen during the run:", *screens[len(screens) // 2 :][:1], "--- the last:", screen])
            )
            assert bars or not bars_expected, "no progress line with a percentage and an ETA; the screens were:\n" + (
                "\n--\n".join(screens)
            )
            return bars
        time.sleep(0.05)
    raise AssertionError(f"`{command}` did not finish in {seconds} s: {screen}")


def test_backup_and_restore_show_percentage_and_eta_in_a_terminal(env, tmux):
    config = env["config"]
    bars = _watch(tmux, f"{OPSDB} backup --config {config}", "complete:")
    assert bars, "no progress line with a percentage and an ETA during the backup"
    assert any(0 < int(BAR.search(b).group(1)) < 100 for b in bars), bars  # type: ignore[union-attr]
    assert "MB" not in " ".join(bars)  # IEC everywhere, as in the summary line

    target = make_temp_dir("opsdb-progress-restore-")
    shutil.rmtree(target)
    try:
        bars = _watch(tmux, f"{OPSDB} restore --config {config} --target-dir {target}", "restored backup")
        assert bars, "no progress line with a percentage and an ETA during the restore"
        assert "restore main" in bars[0]
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_verify_shows_percentage_and_eta_in_a_terminal(env, tmux):
    if not json.loads(opsdb(env["config"], "--json", "backups", "list").stdout)["backups"]:
        opsdb(env["config"], "backup")  # run alone: something to read
    bars = _watch(tmux, f"{OPSDB} verify --config {env['config']}", "OK: every object")
    assert "verify main" in bars[0] and "MB" not in " ".join(bars)
    tmux("kill-server")
    quiet = _watch(tmux, f"{OPSDB} verify --config {env['config']} --json", '"result": "pass"', bars_expected=False)
    assert quiet == []  # --json: a program reads the result, no bar even on a terminal


def _records(stderr: str, command: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Every stderr line is one JSON object (nothing else there: no bar, no text); (start, phases, end)."""
    lines = [json.loads(line) for line in stderr.splitlines()]
    mine = [r for r in lines if r.get("command") == command]
    start, end = mine[0], mine[-1]
    assert start["event"] == "start" and end["event"] == "end", mine
    assert all(r["level"] == "info" for r in mine), mine
    return start, [r for r in mine if r["event"] == "phase"], end


def test_without_a_terminal_no_progress_only_start_phase_and_end_records(env):
    config = env["config"]
    backup = opsdb(config, "--log-format", "json", "backup")
    assert "MiB/s" in backup.stdout  # the summary's rate, in the same units as the bar
    start, phases, end = _records(backup.stderr, "backup")
    assert start["cluster"] == "main" and start["repository"].startswith("file://") and len(start["key_id"]) > 4
    assert [p["phase"] for p in phases] == ["start backup", "streaming", "uploading", "catalog written"]
    backup_id = phases[0]["backup_id"]
    assert phases[0]["source"] == "primary" and phases[-1]["backup_id"] == backup_id
    assert phases[-1]["bytes"] > 100 * 2**20 and phases[-1]["stop_lsn"]
    assert end["result"] == "ok" and end["exit_code"] == 0 and end["duration_seconds"] > 0
    assert end["bytes"] > 100 * 2**20  # the bytes it streamed

    verify = opsdb(config, "--log-format", "json", "verify")
    assert "MiB/s" in verify.stdout and "OK:" in verify.stdout
    start, phases, end = _records(verify.stderr, "verify")
    names = [p["phase"] for p in phases]
    assert names[:2] == ["scan", "read"] and phases[0]["scope"] == "repository"
    assert phases[1]["stored_bytes"] > 10 * 2**20 and end["bytes"] >= phases[1]["stored_bytes"]
    checked = [p for p in phases if p["phase"] == "backup checked"]
    assert {"backup_id": backup_id, "problems": 0}.items() <= checked[-1].items()
    assert end["result"] == "ok"

    target = make_temp_dir("opsdb-progress-restore-")
    shutil.rmtree(target)
    try:
        restore = opsdb(config, "--log-format", "json", "restore", "--backup", backup_id, "--target-dir", target)
        start, phases, end = _records(restore.stderr, "restore")
        assert [p["phase"] for p in phases] == ["plan", "fetch", "check", "recovery config", "sync"]
        assert phases[0]["backup_id"] == backup_id and phases[1]["bytes"] == phases[0]["bytes_to_write"]
        assert phases[-1]["method"] == "fsync" and end["result"] == "ok" and end["bytes"] > 100 * 2**20
    finally:
        shutil.rmtree(target, ignore_errors=True)
    for proc in (backup, verify, restore):
        assert "ETA" not in proc.stderr + proc.stdout and "\r" not in proc.stderr


@pytest.fixture(scope="module")
def archiving(pg_bin_dir: Path) -> Iterator[dict[str, Any]]:
    """A primary archiving through `opsdb wal-push`, one backup, then 40 segments of WAL to replay."""
    from tests.integration.archiving_env import archiving_env, chown_tree, config_text
    from tests.integration.test_pitr import wait_archived, x

    cluster = f'os_user = "postgres"\npg_bin_dir = "{pg_bin_dir}"\n'
    render = lambda work, port: config_text(work, port, cluster=cluster)  # noqa: E731
    with archiving_env(pg_bin_dir, "opsdb-progress-replay-", render) as env:
        primary = env["primary"]
        x(primary, "CREATE TABLE t (id int, note text)")
        opsdb(env["config"], "backup")
        chown_tree(env["workdir"])
        for n in range(40):  # bounded: 40 segments with rows in each (replay has records to apply)
            x(primary, f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series({n * 5000}, {n * 5000 + 4999}) g")
            x(primary, "SELECT pg_switch_wal()")
        wait_archived(primary, timeout=180)
        yield {"config": env["config"], "factory": env["factory"], "server_opsdb": env["opsdb"]}


def test_restore_start_shows_the_wal_replayed_out_of_the_wal_to_replay(archiving, tmux):
    from opsdb.pg.instance import Instance
    from opsdb.proc import LocalRunner
    from tests.fixtures.pg import free_port, os_user

    factory = archiving["factory"]
    target, port = factory.new_dir() / "data", free_port()
    command = (
        f"OPSDB_EXECUTABLE={archiving['server_opsdb']} {OPSDB} restore --config {archiving['config']} "
        f"--target-dir {target} --latest --start --port {port}"
    )
    try:
        bars = _watch(tmux, command, "restored backup")
    finally:
        if (target / "postmaster.pid").exists():
            Instance(target, port, factory.bin_dir, os_user(), LocalRunner()).stop()
    replay = [b for b in bars if "replay WAL main" in b]
    assert replay, f"no replay bar with a percentage and an ETA among {bars}"
    assert all(int(BAR.search(b).group(1)) <= 100 for b in replay)  # type: ignore[union-attr]
