"""opsdb demo: the product tour on a throwaway cluster, through the code paths an operator uses.

setup    a temp dir holding an opsdb.toml, a fresh key and a file:// repository; initdb (as os_user
         when root) with archive_command = `opsdb ... wal-push %p` (ops/proof/demo_archive.py; a fallback
         that says so when os_user cannot run this opsdb); start
backup   `backup_from_settings`, the function `opsdb backup` calls: pg_basebackup streamed through
         named pipes into the repository, compressed and encrypted, never held in memory
activity six batches of rows, a heartbeat after each, the WAL switched and archived each time
drill    `drill_from_settings`, the function `opsdb drill` calls, to the time halfway between
         heartbeats 3 and 4; the report (json, md, html) written to report_dir
cleanup  every server under the temp dir stopped and the temp dir removed, on success, failure or
         Ctrl-C; only the report stays

The demo reads its own config file only: OPSDB_* variables in the environment (which would override
it, and reach archive_command) are set aside for its duration, so it can never touch a real repository.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from opsdb.config import load_settings
from opsdb.errors import OpsdbError
from opsdb.model.report import DrillReport, format_time
from opsdb.model.units import human_bytes
from opsdb.ops.backup.physical import BackupResult, backup_from_settings
from opsdb.ops.common.codec import repository
from opsdb.ops.proof.demo_archive import ArchiveMode, Archiver, choose_mode
from opsdb.ops.proof.drill_run import drill_from_settings
from opsdb.ops.proof.heartbeat import record_heartbeat
from opsdb.ops.proof.scratch import chown_to, free_port
from opsdb.ops.wal.push_fetch import push_file, wal_repo_from_settings
from opsdb.ops.wal.spool import stop_helpers
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.pg.tools import find_bin_dir
from opsdb.proc import LocalRunner
from opsdb.render.catalog import summary_line
from opsdb.repo import layout

CLUSTER = "demo"
HEARTBEATS = 6
ROWS_PER_BATCH = 1000
BEAT_GAP_SECONDS = 0.5  # heartbeats this far apart: the drill targets the middle of one gap
WORK_PREFIX = "opsdb-demo-"
KEEP_ENV = ("OPSDB_EXECUTABLE",)  # which opsdb PostgreSQL should run: meant for the demo too


@dataclasses.dataclass
class DemoResult:
    report: DrillReport
    report_dir: str
    report_files: list[str]
    backup: BackupResult
    archiving: ArchiveMode
    wal_archived: int  # files PostgreSQL archived (segments and history files)
    wal_stored_bytes: int
    target_time: datetime
    timings: dict[str, float]  # setup, backup, activity, drill, cleanup, total (seconds)
    steps: list[str]

    @property
    def passed(self) -> bool:
        return self.report.passed


class _Tour:
    def __init__(
        self, workdir: Path, user: str | None, os_user: str, log: Callable[[str], None], bin_dir: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.user = user  # who runs PostgreSQL (None: this user)
        self.os_user = os_user
        self.log = log
        self.runner = LocalRunner()
        self.bin_dir = find_bin_dir(bin_dir)
        self.steps: list[str] = []
        self.timings: dict[str, float] = {}
        self.instance = Instance(workdir / "data", free_port(), self.bin_dir, user, self.runner)
        self.config = workdir / "opsdb.toml"

    def step(self, text: str) -> None:
        self.steps.append(text)
        self.log(f"demo: {text}")

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - start, 3)

    # --- setup -------------------------------------------------------------------------------------

    def write_config(self) -> None:
        from opsdb.stream.crypto import generate_key_file

        w = self.workdir
        generate_key_file(w / "repo.key")
        self.config.write_text(
            "# written by `opsdb demo`; removed with its temp dir\n"
            f'[repository]\nurl = "file://{w}/repo"\n'
            f'[encryption]\nkey_file = "{w}/repo.key"\nrequired = true\n'
            f"[clusters.{CLUSTER}]\n"
            f'conninfo = "host=127.0.0.1 port={self.instance.port} user=postgres dbname=postgres"\n'
            f'pg_bin_dir = "{self.bin_dir}"\nos_user = "{self.os_user}"\n'
            f'[wal]\nspool_dir = "{w}/spool"\n'
            f'[drill]\nscratch_dir = "{w}"\ntimeout = "10m"\n'
        )
        # the server's user reads the config and key (archive_command) and writes the WAL archive;
        # the WAL prefix exists before anything else so the backup (run as this user) cannot create
        # its parents with modes the server's user cannot write into
        wal_dir = w / "repo" / layout.wal_prefix(CLUSTER)
        wal_dir.mkdir(parents=True)
        for path in (w / "repo.key", self.config, *_dirs_between(w, wal_dir)):
            chown_to(path, self.user)
        (w / "staging").mkdir()
        chown_to(w / "staging", self.user)

    def start_cluster(self) -> ArchiveMode:
        mode = choose_mode(self.config, CLUSTER, self.user, self.workdir / "staging", self.runner)
        self.step(f"WAL archiving: {mode.note}")
        self.instance.initdb(("-k",))
        self.instance.configure(
            {
                "wal_level": "replica",
                "archive_mode": "on",
                "archive_command": mode.archive_command,
                "max_wal_senders": 4,
                "lc_messages": "C",
                "fsync": "off",  # a throwaway cluster: the demo measures opsdb, not this disk's flushes
            }
        )
        self.instance.start()
        self.step(
            f"initdb + start: PostgreSQL {_server_version(self.instance)} on 127.0.0.1:{self.instance.port}, "
            f"data in {self.instance.data_dir}"
        )
        return mode

    # --- the tour ----------------------------------------------------------------------------------

    def activity(self, archiver: Archiver) -> list[datetime]:
        conninfo = self.instance.conninfo()
        with connect(conninfo) as conn:
            conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, placed timestamptz DEFAULT now(), note text)")
        beats = []
        for i in range(HEARTBEATS):
            with connect(conninfo) as conn:
                conn.execute(
                    "INSERT INTO orders (id, note) SELECT g, %s FROM generate_series(%s::bigint, %s::bigint) g",
                    (f"batch {i + 1}", i * ROWS_PER_BATCH + 1, (i + 1) * ROWS_PER_BATCH),
                )
            beats.append(record_heartbeat(conninfo, "public").time)
            archiver.switch_and_wait()
            if i < HEARTBEATS - 1:
                time.sleep(BEAT_GAP_SECONDS)
        return beats

    def run(self, report_dir: Path) -> DemoResult:
        with self.timed("setup"):
            self.write_config()
            mode = self.start_cluster()
            settings = load_settings(self.config)
        wal_repo = wal_repo_from_settings(settings, CLUSTER, writable=True)
        archiver = Archiver(mode, self.instance.conninfo(), self.instance.log_path, lambda p: push_file(wal_repo, p))
        self.step(f"setup: {self.timings['setup']:.1f} s")

        with self.timed("backup"):
            # the first archived segment creates the repository's markers as the server's user, who
            # must read them on every later push and fetch (a backup run as root would own them)
            archiver.switch_and_wait()
            backup = backup_from_settings(settings, CLUSTER)
            archiver.switch_and_wait()  # the segment the backup ended in, so the archive reaches past it
        self.step(f"{summary_line('backup', backup.record, backup.seconds)} (zstd + AES-256-GCM, via `opsdb backup`)")

        with self.timed("activity"):
            beats = self.activity(archiver)
        archived = archiver.archived_count()
        stored = sum(i.size for i in repository(settings).storage.list(layout.wal_prefix(CLUSTER)))
        self.step(
            f"activity: {HEARTBEATS} batches of {ROWS_PER_BATCH} rows, a heartbeat after each, WAL switched and "
            f"archived each time: {archived} WAL files, {human_bytes(stored)} stored, {self.timings['activity']:.1f} s"
        )

        k = HEARTBEATS // 2
        target = beats[k - 1] + (beats[k] - beats[k - 1]) / 2
        self.step(f"drill: point-in-time restore to {format_time(target)}, halfway between heartbeats {k} and {k + 1}")
        with self.timed("drill"):
            report, files = drill_from_settings(settings, CLUSTER, to_time=target, report_dir=str(report_dir))
        self.step(_drill_line(report))
        html = next((f for f in files if f.endswith(".html")), "")
        self.step(f"report: {html} (and .json, .md beside it)")
        return DemoResult(
            report, str(report_dir), files, backup, mode, archived, stored, target, self.timings, self.steps
        )

    # --- cleanup -----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop every server under the temp dir (the demo's, and a drill's scratch server if the drill was
        interrupted before its own teardown), then remove the temp dir."""
        with _no_interrupts(), self.timed("cleanup"):
            stop_helpers(str(self.workdir / "spool"))  # the WAL helper archive_command started
            pid_files = sorted(self.workdir.rglob("postmaster.pid")) if self.workdir.is_dir() else []
            for pid_file in pid_files:
                server = Instance(pid_file.parent, 0, self.bin_dir, self.user, self.runner)
                with contextlib.suppress(OpsdbError, OSError):
                    server.stop(mode="immediate", timeout=30)  # thrown away next: no shutdown checkpoint
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.step(
            f"cleanup: stopped {len(pid_files)} server(s), removed {self.workdir} ({self.timings['cleanup']:.1f} s)"
        )


def run_demo(
    report_dir: Path,
    *,
    os_user: str = "postgres",
    log: Callable[[str], None] = lambda line: None,
    bin_dir: Path | None = None,
) -> DemoResult:
    """Run the tour; the report stays in report_dir, everything else is removed (even on failure)."""
    started = time.monotonic()
    set_aside = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("OPSDB_") and k not in KEEP_ENV}
    workdir = Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
    try:
        user = os_user if os.geteuid() == 0 else None
        chown_to(workdir, user)
        tour = _Tour(workdir, user, os_user, log, bin_dir)
        if set_aside:
            tour.step(f"ignoring {', '.join(sorted(set_aside))} from the environment (the demo uses its own config)")
        tour.step(f"working in {workdir} (removed at the end)")
        try:
            result = tour.run(report_dir)
        finally:
            tour.cleanup()
        result.timings["total"] = round(time.monotonic() - started, 3)
        tour.step(
            "total {total:.1f} s (setup {setup:.1f}, backup {backup:.1f}, activity {activity:.1f}, drill {drill:.1f}, "
            "cleanup {cleanup:.1f})".format(**result.timings)
        )
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # when even the tour's set-up failed
        os.environ.update(set_aside)


def summary(result: DemoResult) -> dict[str, Any]:
    """The `demo --json` object."""
    rec = result.backup.record
    return {
        "result": result.report.result,
        "report_dir": result.report_dir,
        "report_files": result.report_files,
        "drill": result.report.summary(),
        "backup_id": rec.id,
        "backup": {
            "size_bytes": rec.size_bytes,
            "stored_bytes": rec.stored_bytes,
            "seconds": round(result.backup.seconds, 3),
        },
        "wal": {
            **result.archiving.to_dict(),
            "archived_files": result.wal_archived,
            "stored_bytes": result.wal_stored_bytes,
        },
        "target_time": format_time(result.target_time),
        "timings": result.timings,
        "steps": result.steps,
    }


def _drill_line(report: DrillReport) -> str:
    phases = ", ".join(f"{name} {secs:.1f}" for name, secs in report.phases.items())
    rpo = f"{report.rpo_seconds:.2f} s" if report.rpo_seconds is not None else "n/a"
    verdict = "PASS" if report.passed else "FAIL (" + ", ".join(c.name for c in report.failed_checks) + ")"
    return (
        f"drill {verdict}: RPO {rpo}, RTO {report.rto_seconds:.1f} s ({phases}), "
        f"{human_bytes(report.bytes_read)} read, WAL source: {report.environment.get('wal_source', '?')}"
    )


def _dirs_between(top: Path, leaf: Path) -> list[Path]:
    """top's descendants down to leaf, inclusive: [top/a, top/a/b, ..., leaf]."""
    rel = leaf.relative_to(top).parts
    return [top.joinpath(*rel[: i + 1]) for i in range(len(rel))]


def _server_version(instance: Instance) -> str:
    with connect(instance.conninfo()) as conn:
        return str(conn.fetchval("SHOW server_version")).split()[0]


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """A second Ctrl-C must not abandon a half-done cleanup: SIGINT is ignored while it runs (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["DemoResult", "run_demo", "summary"]
