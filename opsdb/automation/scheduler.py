"""`opsdb schedule run`: the foreground loop that runs each job as a child process at its times.

- Each run is `python -m opsdb --config C [--cluster X] <command>` through opsdb.proc, in its own
  session, with stdout+stderr in <state>/output/<job>.log; the tail goes into the history record.
- Never two runs of one job at once: a slot that comes while the previous run is still going is
  recorded as skipped, and a per-job flock keeps a second scheduler on the same state dir out.
- After downtime a job whose slot passed while nothing ran is run once (not once per missed slot);
  the history's newest `scheduled` time says which slots were already handled. On the very first
  start (no history) nothing counts as missed.
- stop() (SIGTERM/SIGINT): no new runs start; running ones get `grace` seconds to finish, then their
  process groups are terminated and recorded as such.
- One job cannot crash the loop: failures to start or to notify are logged and recorded.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsdb.automation.history import JobHistory, JobLock, RunRecord, read_tail
from opsdb.automation.schedule import Job, job_argv, latest_slot, next_run
from opsdb.errors import LockHeld, OpsdbError
from opsdb.proc import Cmd, Runner, Spawned, python_module

log = logging.getLogger("opsdb.schedule")

Clock = Callable[[], datetime]
AfterRun = Callable[[RunRecord], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass
class _Running:
    job: Job
    scheduled: datetime
    started: datetime
    started_mono: float
    handle: Spawned
    lock: JobLock
    output: Path
    timed_out: bool = False


class Scheduler:
    def __init__(
        self,
        jobs: list[Job],
        *,
        runner: Runner,
        state: Path,
        config_path: Path | None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        after_run: AfterRun | None = None,
        program: tuple[str, ...] | None = None,
        kill_wait: float = 10.0,
    ) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.runner = runner
        self.state = state
        self.config_path = config_path
        self.clock = clock
        self.rng = rng or random.Random()
        self.after_run = after_run
        self.program = program
        self.kill_wait = kill_wait
        self.history = JobHistory(state)
        self.running: dict[str, _Running] = {}
        self.due: dict[str, tuple[datetime, datetime]] = {}  # job -> (slot, slot + jitter)
        self._stop = threading.Event()

    # --- planning ---------------------------------------------------------------------------

    def _with_jitter(self, job: Job, slot: datetime) -> tuple[datetime, datetime]:
        seconds = job.jitter.total_seconds()
        slot = slot.astimezone(UTC)  # see schedule.iter_runs: compare instants, not wall-clock times
        return slot, slot + timedelta(seconds=self.rng.uniform(0, seconds) if seconds > 0 else 0)

    def plan(self, now: datetime | None = None) -> dict[str, tuple[datetime, datetime]]:
        """Due times per job: a missed slot since the last handled one runs now, once."""
        now = (now or self.clock()).astimezone(UTC)
        for job in self.jobs.values():
            last = self.history.last(job.name, ran=False)
            if last is not None:
                handled = datetime.fromisoformat(last.scheduled)
                if next_run(job, handled).astimezone(UTC) <= now:
                    slot = latest_slot(job, now).astimezone(UTC)
                    log.info("job %s missed its run at %s; running it once now", job.name, slot.isoformat())
                    self.due[job.name] = (slot, now)
                    continue
            self.due[job.name] = self._with_jitter(job, next_run(job, now))
        return self.due

    # --- one pass ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Reap finished runs, enforce timeouts, start due jobs (unless stopping)."""
        self._reap()
        if self._stop.is_set():
            return
        now = self.clock().astimezone(UTC)
        for name, (slot, at) in sorted(self.due.items(), key=lambda item: item[1][1]):
            if at > now:
                continue
            job = self.jobs[name]
            self.due[name] = self._with_jitter(job, next_run(job, max(now, slot)))
            if name in self.running:
                self._skip(
                    job, slot, now, f"previous run (started {self.running[name].started.isoformat()}) still running"
                )
                continue
            self._start(job, slot, now)

    def _start(self, job: Job, slot: datetime, now: datetime) -> None:
        lock = JobLock(self.state, job.name)
        try:
            lock.acquire()
        except LockHeld as exc:
            self._skip(job, slot, now, str(exc))
            return
        output = self.state / "output" / f"{job.name}.log"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.unlink(missing_ok=True)
        argv = job_argv(job, self.config_path, program=self.program)
        timeout = job.timeout.total_seconds() if job.timeout else None
        try:
            handle = self.runner.spawn(Cmd(argv, env={"OPSDB_SCHEDULED_JOB": job.name}), log_path=output)
        except (OpsdbError, OSError) as exc:
            lock.release()
            self._record(job, slot, now, now, exit_code=127, status="failed", output=str(exc))
            return
        fields = {"event": "start", "job": job.name, "command": f"opsdb {job.command_line}", "job_pid": handle.pid}
        log.info("job %s: start", job.name, extra={"fields": {**fields, "timeout_seconds": timeout}})
        self.running[job.name] = _Running(job, slot, now, time.monotonic(), handle, lock, output)

    def _reap(self) -> None:
        for name, run in list(self.running.items()):
            code = run.handle.poll()
            if code is None and run.job.timeout is not None:
                if time.monotonic() - run.started_mono > run.job.timeout.total_seconds():
                    run.timed_out = True
                    code = run.handle.terminate(timeout=self.kill_wait)
            if code is None:
                continue
            self._finish(run, code, "timeout" if run.timed_out else ("ok" if code == 0 else "failed"))
            del self.running[name]

    def _finish(self, run: _Running, code: int, status: str) -> None:
        run.lock.release()
        self._record(
            run.job,
            run.scheduled,
            run.started,
            self.clock(),
            exit_code=code,
            status=status,
            output=read_tail(run.output),
        )

    def _skip(self, job: Job, slot: datetime, now: datetime, why: str) -> None:
        log.warning("job %s: skipped the run at %s: %s", job.name, slot.isoformat(), why)
        self.history.append(
            RunRecord(
                job.name,
                slot.isoformat(),
                now.isoformat(),
                now.isoformat(),
                None,
                "skipped",
                0.0,
                job.command_line,
                why,
            )
        )

    def _record(
        self, job: Job, slot: datetime, start: datetime, end: datetime, *, exit_code: int, status: str, output: str
    ) -> None:
        duration = max(0.0, (end - start).total_seconds())
        record = RunRecord(
            job.name,
            slot.isoformat(),
            start.isoformat(),
            end.isoformat(),
            exit_code,
            status,
            round(duration, 3),
            job.command_line,
            output,
        )
        self.history.append(record)
        line = output.strip().splitlines()[-1] if output.strip() else ""
        detail = f": {line[:200]}" if status != "ok" and line else ""
        level = logging.INFO if status == "ok" else logging.ERROR
        fields = {
            "event": "end",
            "job": job.name,
            "result": status,
            "exit_code": exit_code,
            "duration_seconds": round(duration, 3),
        }
        log.log(
            level,
            "job %s: %s (exit %s) in %.1fs, `opsdb %s`%s",
            job.name,
            status,
            exit_code,
            duration,
            job.command_line,
            detail,
            extra={"fields": fields},
        )
        if self.after_run is not None:
            try:
                self.after_run(record)
            except Exception as exc:  # a notification or metrics failure must not stop the scheduler
                log.error("job %s: after-run hook failed: %s", job.name, exc)

    # --- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, grace: float = 300.0, poll_interval: float = 1.0, max_seconds: float | None = None) -> None:
        """Loop until stop() (or max_seconds, for tests and one-shot use), then drain running jobs."""
        if not self.due:
            self.plan()
        started = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                break
            self._stop.wait(self._sleep_for(poll_interval))
        self.drain(grace)

    def _sleep_for(self, poll_interval: float) -> float:
        if self.running:
            return min(poll_interval, 0.2)
        if not self.due:
            return poll_interval
        until = min(at for _, at in self.due.values()) - self.clock()
        return max(0.01, min(poll_interval, until.total_seconds()))

    def drain(self, grace: float) -> None:
        """Let running jobs finish for up to `grace` seconds, then terminate them."""
        if self.running:
            log.info("stopping: waiting up to %.0fs for %s", grace, ", ".join(sorted(self.running)))
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            self._reap()
            if self.running:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        for name, run in list(self.running.items()):
            log.error("job %s: still running after the %.0fs grace period; terminating it", name, grace)
            code = run.handle.terminate(timeout=self.kill_wait)
            self._finish(run, code, "terminated")
            del self.running[name]


def install_stop_signals(scheduler: Scheduler) -> None:
    """SIGTERM and SIGINT stop the scheduler gracefully (must be called from the main thread)."""

    def handler(signum: int, frame: object) -> None:
        log.info("received %s: no new jobs will start", signal.Signals(signum).name)
        scheduler.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def refresh_metrics_hook(runner: Runner, config_path: Path | None, textfile: Path, *, timeout: float = 120.0) -> None:
    """Rewrite the Prometheus textfile after a job (`opsdb metrics --textfile PATH` as a child)."""
    argv = list(python_module("opsdb"))
    if config_path is not None:
        argv += ["--config", str(config_path)]
    result = runner.run(Cmd((*argv, "metrics", "--textfile", str(textfile)), timeout=timeout), check=False)
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        log.error("metrics refresh failed (exit %s): %s", result.returncode, tail[-1] if tail else "no output")
