"""The scheduler as a real process: a job runs on time, and SIGTERM lets a running job finish (or not).

No PostgreSQL needed. Every wait is bounded; every process is killed at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LOOP_SCRIPT = textwrap.dedent(
    """
    import pathlib, sys
    from opsdb.automation.schedule import make_job
    from opsdb.automation.scheduler import Scheduler, install_stop_signals
    from opsdb.proc import LocalRunner

    state, grace = pathlib.Path(sys.argv[1]), float(sys.argv[2])
    job = make_job("slow", {"cron": "* * * * * *", "command": "sleep 3"})
    # the job's program: prints, sleeps for its last argument, prints again
    program = (sys.executable, "-c", "import sys,time; print('started', flush=True); "
               "time.sleep(float(sys.argv[-1])); print('done', flush=True)")
    scheduler = Scheduler([job], runner=LocalRunner(), state=state, config_path=None, program=program)
    install_stop_signals(scheduler)
    scheduler.run(grace=grace, poll_interval=0.1)
    print("scheduler exited", flush=True)
    """
)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def history(state: Path) -> list[dict]:
    path = state / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def start_loop(processes, state: Path, grace: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP_SCRIPT, str(state), str(grace)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    processes.append(proc)
    return proc


def test_sigterm_lets_the_running_job_finish(tmp_path, processes):
    proc = start_loop(processes, tmp_path, grace=20)
    output = tmp_path / "output" / "slow.log"
    wait_for(lambda: output.exists() and "started" in output.read_text(), 15, "the job to start")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    waited = time.monotonic() - sent
    assert proc.returncode == 0, err.decode()
    assert b"scheduler exited" in out
    assert 1.0 < waited < 15  # it waited for the 3 s job, not for the 20 s grace
    records = history(tmp_path)
    assert [r["status"] for r in records] == ["ok"], records  # finished, and nothing new started
    assert "done" in records[0]["output_tail"]


def test_sigterm_terminates_a_job_that_outlives_the_grace_period(tmp_path, processes):
    proc = start_loop(processes, tmp_path, grace=0.5)
    output = tmp_path / "output" / "slow.log"
    wait_for(lambda: output.exists() and "started" in output.read_text(), 15, "the job to start")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert time.monotonic() - sent < 2.9  # did not wait for the 3 s job
    records = history(tmp_path)
    assert [r["status"] for r in records] == ["terminated"]
    assert "done" not in records[0]["output_tail"]


def test_cli_scheduler_runs_a_real_job_on_time(tmp_path, processes):
    """`opsdb schedule run` with a job due every 2 seconds (`opsdb --version`), then SIGTERM."""
    config = tmp_path / "opsdb.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [repository]
            url = "file://{tmp_path}/repo"
            [schedule.version]
            cron = "* * * * * */2"
            command = "--version"
            """
        )
    )
    state = tmp_path / "state"
    env = {**os.environ, "OPSDB_SCHEDULER_STATE_DIR": str(state)}
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsdb", "--config", str(config), "schedule", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    processes.append(proc)
    wait_for(lambda: len([r for r in history(state) if r["status"] == "ok"]) >= 2, 30, "two runs")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    runs = [r for r in history(state) if r["status"] == "ok"]
    assert all("opsdb 0." in r["output_tail"] for r in runs)
    for r in runs:
        scheduled = time.mktime(time.strptime(r["scheduled"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert scheduled >= started - 1 and int(scheduled) % 2 == 0
        start = time.mktime(time.strptime(r["start"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert 0 <= start - scheduled < 2  # on time (no jitter configured)
    assert b"job version: ok (exit 0)" in err
