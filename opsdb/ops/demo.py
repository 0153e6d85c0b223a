"""opsdb demo: the whole tour on a throwaway cluster, leaving only the drill report behind.

initdb (as os_user when root) -> a file:// repository and a fresh key in a temp dir -> a base backup
-> activity with heartbeats, WAL archived -> a point-in-time drill to the middle of the activity ->
the report (json, md, html) in report_dir -> everything else removed, even on failure.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from opsdb.errors import OperationFailed
from opsdb.model.catalog import BackupRecord, StoredFile
from opsdb.model.lsn import Lsn
from opsdb.model.report import DrillReport
from opsdb.ops.drill import DrillRequest, run_drill
from opsdb.ops.drill_restore import RepositoryRestorer
from opsdb.ops.drill_run import load_catalog, save_report
from opsdb.ops.heartbeat import record_heartbeat
from opsdb.ops.scratch import LocalScratch, chown_to, free_port
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.pg.tools import find_bin_dir
from opsdb.proc import Cmd, LocalRunner
from opsdb.repo import catalog, envelope, layout
from opsdb.repo import wal as walrepo
from opsdb.repo.envelope import Codec
from opsdb.storage.local import LocalStorage
from opsdb.stream.crypto import generate_key_file

CLUSTER = "demo"
HEARTBEATS = 6


@dataclasses.dataclass(frozen=True)
class DemoResult:
    report: DrillReport
    report_files: list[str]
    steps: list[str]


class _Tour:
    def __init__(self, workdir: Path, bin_dir: Path, os_user: str | None, log: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.runner = LocalRunner()
        self.os_user = os_user
        self.bin_dir = bin_dir
        self.log = log
        self.steps: list[str] = []
        self.archive = workdir / "archive"
        self.storage = LocalStorage(workdir / "repo")
        key = generate_key_file(workdir / "repo.key")
        self.keys = {key.id: key}
        self.codec = Codec(compression="zstd", level=1, key=key, require_encryption=True)
        self.instance = Instance(workdir / "data", free_port(), bin_dir, os_user, self.runner)
        self.pushed: set[str] = set()

    def step(self, text: str) -> None:
        self.steps.append(text)
        self.log(f"demo: {text}")

    def sql(self, text: str) -> object:
        with connect(self.instance.conninfo()) as conn:
            return conn.fetchval(text)

    def start_cluster(self) -> None:
        self.archive.mkdir()
        chown_to(self.archive, self.os_user)
        self.instance.initdb(("-k",))
        self.instance.configure(
            {
                "wal_level": "replica",
                "archive_mode": "on",
                # the server's user copies each finished segment; the demo pushes it through the
                # same create-only, encrypted wal-push path (repo.wal.push) a moment later
                "archive_command": f"cp %p {self.archive}/%f",
                "max_wal_senders": 4,
                "fsync": "off",
            }
        )
        self.instance.start()
        self.step(f"initdb + start: PostgreSQL on 127.0.0.1:{self.instance.port} ({self.instance.data_dir})")

    def switch_and_archive(self) -> None:
        # the file pg_switch_wal closed (or, with nothing to switch, the last one it closed before)
        name = self.sql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 60
        # pg_stat_archiver, not the file's existence: cp may still be writing it
        done = "SELECT coalesce(last_archived_wal >= %s, false) FROM pg_stat_archiver"
        while not self._archived(done, str(name)):  # bounded by the deadline
            if time.monotonic() > deadline:
                raise OperationFailed(f"the demo cluster did not archive {name} within 60 s")
            time.sleep(0.05)
        for path in sorted(self.archive.iterdir()):
            # only what PostgreSQL reported archived: a later segment may still be half-copied
            if path.name not in self.pushed and path.name[:24] <= str(name):
                walrepo.push(self.storage, CLUSTER, path.name, lambda p=path: [p.read_bytes()], self.codec, self.keys)
                self.pushed.add(path.name)

    def _archived(self, sql: str, name: str) -> bool:
        with connect(self.instance.conninfo()) as conn:
            return bool(conn.fetchval(sql, (name,)))

    def backup(self) -> None:
        """A base backup straight into the repository (pg_basebackup tar stream, encrypted)."""
        start = datetime.now(UTC)
        backup_id = start.strftime("%Y%m%dT%H%M%SZ")
        argv = (self.instance.tools.path("pg_basebackup"), "-d", self.instance.conninfo(), "-Ft", "-X", "none",
                "-D", "-", "-c", "fast")  # fmt: skip
        with self.runner.stream(Cmd(argv), doing="taking the demo base backup") as proc:
            data = b"".join(proc.chunks())  # small: a fresh demo cluster is about 30 MB
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            label = tar.extractfile("backup_label").read().decode()  # type: ignore[union-attr]
        start_lsn = re.search(r"START WAL LOCATION: (\S+)", label).group(1)  # type: ignore[union-attr]
        stored = envelope.put_object(
            self.storage, layout.backup_object(CLUSTER, backup_id, "base.tar"), [data], self.codec
        )
        stop_lsn = self.sql("SELECT pg_current_wal_lsn()::text")
        self.switch_and_archive()
        record = BackupRecord(
            id=backup_id, cluster=CLUSTER, kind="physical", start_time=start, stop_time=datetime.now(UTC),
            size_bytes=stored.size, stored_bytes=stored.stored_size, compression="zstd", encrypted=True,
            key_id=self.codec.key.id if self.codec.key else None, timeline=1, start_lsn=Lsn.parse(start_lsn),
            stop_lsn=Lsn.parse(str(stop_lsn)),
            objects=(StoredFile("base.tar", stored.size, stored.stored_size, stored.sha256, role="base"),),
        )  # fmt: skip
        catalog.commit(self.storage, record, self.codec)
        self.step(f"backup {backup_id}: {stored.size:,} bytes, {stored.stored_size:,} stored (zstd + AES-256-GCM)")

    def activity(self) -> list[datetime]:
        with connect(self.instance.conninfo()) as conn:
            conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, placed timestamptz DEFAULT now(), note text)")
        beats = []
        for i in range(HEARTBEATS):
            with connect(self.instance.conninfo()) as conn:
                conn.execute(
                    f"INSERT INTO orders (id, note) SELECT g, 'batch {i}' FROM generate_series({i * 1000 + 1}, {(i + 1) * 1000}) g"
                )
            beats.append(record_heartbeat(self.instance.conninfo(), "public").time)
            self.switch_and_archive()
            time.sleep(0.7)
        self.step(
            f"activity: {HEARTBEATS} batches of 1000 orders, a heartbeat after each, WAL archived ({len(self.pushed)} files)"
        )
        return beats


def run_demo(report_dir: Path, *, os_user: str = "postgres", log: Callable[[str], None] = lambda s: None) -> DemoResult:
    bin_dir = find_bin_dir(None)
    user = os_user if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="opsdb-demo-"))
    chown_to(workdir, user)
    tour = _Tour(workdir, bin_dir, user, log)
    try:
        tour.start_cluster()
        tour.backup()
        beats = tour.activity()
        middle = beats[HEARTBEATS // 2 - 1] + (beats[HEARTBEATS // 2] - beats[HEARTBEATS // 2 - 1]) / 2
        tour.step(
            f"drill: point-in-time restore to {middle.isoformat()} (between heartbeats {HEARTBEATS // 2} and {HEARTBEATS // 2 + 1})"
        )
        request = DrillRequest(cluster=CLUSTER, target_kind="time", to_time=middle, primary_conninfo=tour.instance.conninfo(),
                               os_user=user, timeout=300)  # fmt: skip
        restorer = RepositoryRestorer(
            tour.storage, CLUSTER, tour.keys, lambda: load_catalog(tour.storage, CLUSTER, tour.keys), user
        )
        scratch = LocalScratch(bin_dir, user or "postgres", tour.runner, workdir)
        report = run_drill(request, storage=tour.storage, keys=tour.keys, restorer=restorer, scratch=scratch,
                           bin_dir=bin_dir, runner=tour.runner, log=log)  # fmt: skip
        files = save_report(tour.storage, CLUSTER, report, tour.codec, str(report_dir))
        tour.step(f"report: {', '.join(files)}")
        return DemoResult(report, files, tour.steps)
    finally:
        try:
            tour.instance.stop(mode="immediate", timeout=30)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def summary(result: DemoResult) -> dict[str, object]:
    return {**result.report.summary(), "report_files": result.report_files, "steps": result.steps}


__all__ = ["DemoResult", "run_demo", "summary"]
