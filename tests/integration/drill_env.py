"""A primary with heartbeats, a base backup and archived WAL in repositories, for drill and verify tests.

WAL is archived by PostgreSQL into a local directory (`cp`), then pushed into each repository with
repo.wal.push right after each switch, so upload times follow the primary's clock as with
`archive_command = opsdb wal-push`. (The test servers run as `postgres`, which cannot run this
checkout's interpreter, so the test process does the push.)
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsdb.model.catalog import BackupRecord, StoredFile
from opsdb.model.lsn import Lsn
from opsdb.ops.proof.heartbeat import record_heartbeat
from opsdb.pg.conn import connect
from opsdb.pg.heartbeat import Heartbeat
from opsdb.pg.instance import CLOSE_SEGMENT_SQL, Instance
from opsdb.proc import Cmd, LocalRunner
from opsdb.repo import catalog, envelope, layout
from opsdb.repo import wal as walrepo
from opsdb.repo.envelope import Codec
from opsdb.storage.base import Storage
from opsdb.stream.crypto import EncryptionKey, key_id_of
from opsdb.stream.stages import IterReader

SECRET = bytes(range(32))
KEY = EncryptionKey(key_id_of(SECRET), SECRET)
KEYS = {KEY.id: KEY}
CODEC = Codec(key=KEY, compression="zstd", level=1)


class Primary:
    """The source cluster: archive into `archive_dir`, push to every repository."""

    def __init__(self, instance: Instance, archive_dir: Path, repos: list[Storage], cluster: str = "main") -> None:
        self.instance = instance
        self.archive_dir = archive_dir
        self.repos = repos
        self.cluster = cluster
        self.pushed: set[str] = set()

    @property
    def conninfo(self) -> str:
        return self.instance.conninfo()

    def sql(self, text: str, params: Any = None) -> Any:
        with connect(self.conninfo) as conn:
            return conn.fetchval(text, params)

    def run(self, text: str) -> None:
        with connect(self.conninfo) as conn:
            conn.execute(text)

    def switch_and_push(self) -> None:
        """Close the current segment, wait until PostgreSQL archived it, push everything new."""
        lsn = self.sql(CLOSE_SEGMENT_SQL)
        deadline = time.monotonic() + 30
        done = "SELECT coalesce(last_archived_wal >= %s, false) FROM pg_stat_archiver"
        while not self.sql(done, (lsn,)):  # bounded by the deadline (cp may still be writing the file)
            assert time.monotonic() < deadline, f"{lsn} not archived within 30 s"
            time.sleep(0.05)
        for path in sorted(self.archive_dir.iterdir()):
            if path.name in self.pushed or path.name.startswith(".") or path.name[:24] > lsn:  # not archived yet
                continue
            for storage in self.repos:
                walrepo.push(storage, self.cluster, path.name, lambda p=path: [p.read_bytes()], CODEC, KEYS)
            self.pushed.add(path.name)

    def heartbeat(self) -> Heartbeat:
        return record_heartbeat(self.conninfo, "public")

    def backup(self) -> BackupRecord:
        start_time = datetime.now(UTC)
        argv = (
            self.instance.tools.path("pg_basebackup"),
            "-d",
            self.conninfo,
            "-Ft",
            "-X",
            "none",
            "-D",
            "-",
            "-c",
            "fast",
        )
        backup_id = start_time.strftime("%Y%m%dT%H%M%SZ")
        key = layout.backup_object(self.cluster, backup_id, "base.tar")
        first, *others = self.repos
        with LocalRunner().stream(Cmd(argv), doing="pg_basebackup") as proc:
            stored = envelope.put_object(first, key, proc.chunks(), CODEC)  # streamed: bounded memory
        stop_time = datetime.now(UTC)
        for storage in others:
            envelope.put_object(storage, key, envelope.get_object(first, key, KEYS), CODEC)
        reader = IterReader(envelope.get_object(first, key, KEYS))
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            label = next(tar.extractfile(m).read().decode() for m in tar if m.name == "backup_label")  # type: ignore[union-attr]
        start_lsn = re.search(r"START WAL LOCATION: (\S+)", label).group(1)  # type: ignore[union-attr]
        stop_lsn = self.sql("SELECT pg_current_wal_lsn()::text")
        record = BackupRecord(
            id=backup_id,
            cluster=self.cluster,
            kind="physical",
            start_time=start_time,
            stop_time=stop_time,
            size_bytes=stored.size,
            stored_bytes=stored.stored_size,
            compression="zstd",
            encrypted=True,
            key_id=KEY.id,
            timeline=1,
            start_lsn=Lsn.parse(start_lsn),
            stop_lsn=Lsn.parse(stop_lsn),
            objects=(StoredFile("base.tar", stored.size, stored.stored_size, stored.sha256, role="base"),),
        )
        for storage in self.repos:
            catalog.commit(storage, record, CODEC)  # the catalog format `opsdb backups list` reads
        return record


def make_primary(make_cluster: Any, repos: list[Storage]) -> Primary:
    archive = make_cluster.new_dir()
    instance = make_cluster(
        archive_mode="on", archive_command=f"cp %p {archive}/%f", archive_timeout=0, wal_keep_size="256MB"
    )
    return Primary(instance, archive, repos)


def copy_repository(src: Path, dst: Path) -> None:
    """A copy keeping modification times (LocalStorage's upload times), for destructive tests."""
    shutil.copytree(src, dst, copy_function=shutil.copy2)


def flip_byte(path: Path, offset: int = -200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, (st.st_atime, st.st_mtime))
