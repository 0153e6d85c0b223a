"""Progress as an operator sees it in a terminal (tmux, read back with capture-pane): a backup and a
restore show a percentage, IEC amounts, the average rate and an ETA; without a terminal, nothing."""

from __future__ import annotations

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
        pytest.skip("tmux is not installed")
    socket = f"opsdb-test-{tmp_path.name}"

    def run(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30).stdout

    yield run
    run("kill-server")


def _watch(tmux: Any, command: str, done: str, seconds: float = 240) -> list[str]:
    """Run `command` in a 150x12 terminal; every bar line seen until `done` shows up on the screen."""
    tmux("new-session", "-d", "-s", "op", "-x", "150", "-y", "12", f"{command}; sleep 600")
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
            assert bars, "no progress line with a percentage and an ETA; the screens were:\n" + "\n--\n".join(screens)
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


def test_no_progress_without_a_terminal(env):
    result = opsdb(env["config"], "backup")
    assert "ETA" not in result.stderr and "%" not in result.stderr.replace("%)", "")
    assert "MiB/s" in result.stdout  # the summary's rate, in the same units as the bar
    end = next(line for line in result.stderr.splitlines() if line.startswith("opsdb: backup: end "))
    assert "result=ok" in end and int(end.split("bytes=")[1].split()[0]) > 100 * 2**20  # the bytes it streamed
