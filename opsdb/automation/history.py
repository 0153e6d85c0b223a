"""The scheduler's state on disk: job history (JSON lines) and one lock file per job.

history.jsonl holds one object per run: {"job", "scheduled", "start", "end", "exit_code", "status",
"duration_seconds", "command", "output_tail"}; status is ok | failed | timeout | skipped. The file is
trimmed to the newest MAX_RECORDS lines (rewritten atomically) when it grows past MAX_BYTES.

A job lock is an flock on locks/<job>.lock: the kernel drops it when the holder dies, so a crashed
scheduler never leaves a stale lock, and a second scheduler on the same state dir cannot start a
job that is already running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from opsdb.errors import LockHeld

DEFAULT_STATE_DIR = Path("/var/lib/opsdb/scheduler")
STATE_DIR_ENV = "OPSDB_SCHEDULER_STATE_DIR"
MAX_BYTES = 2 * 1024 * 1024
MAX_RECORDS = 2000
OUTPUT_TAIL_BYTES = 4096


def state_dir(explicit: str | os.PathLike[str] | None = None, default: Path | None = None) -> Path:
    """--state-dir, else $OPSDB_SCHEDULER_STATE_DIR, else `default`, else /var/lib/opsdb/scheduler."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env)
    return default or DEFAULT_STATE_DIR


@dataclasses.dataclass(frozen=True)
class RunRecord:
    job: str
    scheduled: str  # ISO time of the slot this run was for
    start: str
    end: str
    exit_code: int | None
    status: str  # ok | failed | timeout | skipped
    duration_seconds: float
    command: str
    output_tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class JobHistory:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "history.jsonl"

    def append(self, record: RunRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_dict(), sort_keys=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        if self.path.stat().st_size > MAX_BYTES:
            self._trim()

    def _trim(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)[-MAX_RECORDS:]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, self.path)

    def records(self, job: str | None = None) -> list[RunRecord]:
        """All readable records, oldest first (a torn last line from a crash is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                doc = json.loads(line)
                record = RunRecord(**{f.name: doc.get(f.name) for f in dataclasses.fields(RunRecord)})
            except (ValueError, TypeError):
                continue
            if job is None or record.job == job:
                out.append(record)
        return out

    def last(self, job: str, *, ran: bool = True) -> RunRecord | None:
        """The newest record of the job; with ran=True, skipped slots do not count."""
        for record in reversed(self.records(job)):
            if not ran or record.status != "skipped":
                return record
        return None

    def latest_per_job(self) -> dict[str, RunRecord]:
        latest: dict[str, RunRecord] = {}
        for record in self.records():
            if record.status != "skipped":
                latest[record.job] = record
        return latest


class JobLock:
    """A non-blocking exclusive lock for one job; `acquire()` raises LockHeld naming the job."""

    def __init__(self, directory: Path, job: str) -> None:
        self.path = directory / "locks" / f"{job}.lock"
        self.job = job
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LockHeld(f"unable to start job {self.job}: it is already running ({holder})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def read_tail(path: Path, limit: int = OUTPUT_TAIL_BYTES) -> str:
    """The last `limit` bytes of a file as text (the output tail of a run)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
