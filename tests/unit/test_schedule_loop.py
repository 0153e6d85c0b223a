"""The scheduler loop with an injected clock and a spawn double: overlap, missed runs, timeouts, history."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsdb.automation.history import JobHistory, JobLock, RunRecord
from opsdb.automation.schedule import make_job
from opsdb.automation.scheduler import Scheduler
from opsdb.proc import Cmd

T0 = datetime(2026, 11, 21, 1, 59, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


class Child:
    """A spawned process that exits when the test says so."""

    def __init__(self, log_path: Path | None) -> None:
        self.pid = 4242
        self.code: int | None = None
        self.terminated = False
        self.log_path = log_path

    def finish(self, code: int, output: str = "") -> None:
        if self.log_path is not None and output:
            self.log_path.write_text(output)
        self.code = code

    def poll(self) -> int | None:
        return self.code

    def wait(self, timeout: float | None = None) -> int:
        assert self.code is not None
        return self.code

    def terminate(self, timeout: float = 10) -> int:
        self.terminated = True
        self.code = -15
        return self.code


class SpawnRunner:
    def __init__(self) -> None:
        self.children: list[tuple[Cmd, Child]] = []

    def spawn(self, cmd: Cmd, *, log_path: Path | None = None) -> Child:
        child = Child(log_path)
        self.children.append((cmd, child))
        return child

    def run(self, *a, **k):  # pragma: no cover - the scheduler only spawns
        raise AssertionError("not used")

    stream = feed = run


def make(tmp_path: Path, clock: Clock, cron: str = "0 2 * * *", **kw) -> tuple[Scheduler, SpawnRunner]:
    runner = SpawnRunner()
    job = make_job("nightly", {"cron": cron, "command": "backup", "cluster": "main", **kw})
    sched = Scheduler(
        [job], runner=runner, state=tmp_path, config_path=Path("/etc/opsdb.toml"), clock=clock, rng=random.Random(1)
    )
    return sched, runner


def test_runs_on_time_and_records_history(tmp_path):
    clock = Clock(T0)
    sched, runner = make(tmp_path, clock)
    sched.plan()
    sched.tick()
    assert runner.children == []  # 01:59:30, not due yet
    clock.advance(seconds=30)
    sched.tick()
    assert len(runner.children) == 1
    cmd, child = runner.children[0]
    assert cmd.argv[-5:] == ("--config", "/etc/opsdb.toml", "--cluster", "main", "backup")
    assert cmd.env == {"OPSDB_SCHEDULED_JOB": "nightly"}
    clock.advance(seconds=90)
    child.finish(0, "backup 20261121T020000Z complete\n")
    sched.tick()
    (record,) = JobHistory(tmp_path).records()
    assert record.status == "ok" and record.exit_code == 0 and record.duration_seconds == 90
    assert record.scheduled == "2026-11-21T02:00:00+00:00"
    assert "complete" in record.output_tail
    assert sched.due["nightly"][0] == datetime(2026, 11, 22, 2, tzinfo=UTC)


def test_no_overlap_a_slot_during_a_run_is_skipped(tmp_path):
    clock = Clock(T0)
    sched, runner = make(tmp_path, clock, cron="* * * * *")  # every minute
    sched.plan()
    clock.advance(seconds=30)
    sched.tick()
    assert len(runner.children) == 1
    clock.advance(minutes=1)  # the 02:01 slot comes while the 02:00 run is still going
    sched.tick()
    assert len(runner.children) == 1
    records = JobHistory(tmp_path).records()
    assert [r.status for r in records] == ["skipped"]
    assert "still running" in records[0].output_tail
    runner.children[0][1].finish(1, "boom\n")
    clock.advance(minutes=1)
    sched.tick()
    assert [r.status for r in JobHistory(tmp_path).records()] == ["skipped", "failed"]
    assert len(runner.children) == 2  # the 02:02 slot started once the first run was reaped


def test_a_second_scheduler_on_the_same_state_cannot_start_a_running_job(tmp_path):
    holder = JobLock(tmp_path, "nightly")
    holder.acquire()
    try:
        clock = Clock(T0)
        sched, runner = make(tmp_path, clock)
        sched.plan()
        clock.advance(minutes=1)
        sched.tick()
        assert runner.children == []
        (record,) = JobHistory(tmp_path).records()
        assert record.status == "skipped" and "already running" in record.output_tail
    finally:
        holder.release()


def test_missed_runs_after_downtime_run_once(tmp_path):
    history = JobHistory(tmp_path)
    history.append(RunRecord("nightly", "2026-11-15T02:00:00+00:00", "x", "x", 0, "ok", 1.0, "backup"))
    clock = Clock(T0)  # six nightly slots were missed (16th..21st is not yet due)
    sched, runner = make(tmp_path, clock)
    sched.plan()
    sched.tick()
    assert len(runner.children) == 1
    runner.children[0][1].finish(0)
    sched.tick()
    sched.tick()
    assert len(runner.children) == 1
    last = history.last("nightly")
    assert last is not None and last.scheduled == "2026-11-20T02:00:00+00:00"  # the newest missed slot
    # the regular 02:00 slot today still runs
    clock.advance(seconds=30)
    sched.tick()
    assert len(runner.children) == 2
    # restarting now does not count the handled slots as missed again
    runner.children[1][1].finish(0)
    sched.tick()
    again, runner2 = make(tmp_path, clock)
    again.plan()
    again.tick()
    assert runner2.children == []


def test_first_start_without_history_runs_nothing_missed(tmp_path):
    clock = Clock(T0)
    sched, runner = make(tmp_path, clock)
    sched.plan()
    sched.tick()
    assert runner.children == []


def test_timeout_terminates_the_run(tmp_path):
    clock = Clock(T0)
    sched, runner = make(tmp_path, clock, timeout="0s")
    sched.plan()
    clock.advance(seconds=30)
    sched.tick()
    sched.tick()  # the run is over its (zero) timeout
    child = runner.children[0][1]
    assert child.terminated
    (record,) = JobHistory(tmp_path).records()
    assert record.status == "timeout"


def test_jitter_delays_within_bounds(tmp_path):
    clock = Clock(T0)
    sched, _ = make(tmp_path, clock, jitter="10m")
    slot, at = sched.plan()["nightly"]
    assert slot == datetime(2026, 11, 21, 2, tzinfo=UTC)
    assert slot <= at <= slot + timedelta(minutes=10)


def test_stop_drains_and_terminates_after_grace(tmp_path):
    clock = Clock(T0)
    sched, runner = make(tmp_path, clock)
    sched.plan()
    clock.advance(minutes=1)
    sched.tick()
    sched.stop()
    clock.advance(days=1)
    sched.tick()
    assert len(runner.children) == 1  # stopping: nothing new starts
    sched.drain(grace=0.2)
    assert runner.children[0][1].terminated
    assert [r.status for r in JobHistory(tmp_path).records()] == ["terminated"]


def test_after_run_hook_failure_does_not_break_the_loop(tmp_path):
    clock = Clock(T0)
    seen = []

    def hook(record):
        seen.append(record.status)
        raise RuntimeError("webhook down")

    sched, runner = make(tmp_path, clock)
    sched.after_run = hook
    sched.plan()
    clock.advance(minutes=1)
    sched.tick()
    runner.children[0][1].finish(0)
    sched.tick()
    assert seen == ["ok"]
    assert JobHistory(tmp_path).last("nightly").status == "ok"
