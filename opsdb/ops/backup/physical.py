"""`opsdb backup`: the use case. Picks the server, takes the lock, holds the WAL, has pg_basebackup's tars
streamed into the repository (ops/backup/pipes.py), builds the catalog record and commits it.

The WAL from start to stop LSN: `-X fetch` puts it into base.tar (pg_wal/), so every backup restores
to a consistent state on its own, without the WAL archive. To keep the server from recycling that
WAL while the backup runs, a psql session holds a temporary physical replication slot (dropped by
the server when the session ends, even if opsdb is killed; see ops/backup/source.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdb import __version__
from opsdb.errors import IntegrityError
from opsdb.model.catalog import INCREMENTAL, PHYSICAL, BackupRecord, StoredFile, new_backup_id, next_backup_id
from opsdb.model.lsn import Lsn
from opsdb.ops.backup.compression import server_compression_spec, stream_with_fallback
from opsdb.ops.backup.incremental import check_server_supports, choose_parent, parent_manifest
from opsdb.ops.backup.pipes import OnBytes, stream_basebackup
from opsdb.ops.backup.source import ServerFacts, bin_dir_for_server, choose_source, slot_session
from opsdb.ops.common.phases import phase
from opsdb.proc import Runner
from opsdb.repo import catalog, marker
from opsdb.repo.envelope import Codec
from opsdb.repo.lock import RepositoryLock
from opsdb.storage.base import Storage

if TYPE_CHECKING:
    from opsdb.config import Settings

log = logging.getLogger("opsdb.backup")


@dataclasses.dataclass(frozen=True)
class BackupRequest:
    cluster: str
    conninfo: str  # the cluster's conninfo
    bin_dir: Path
    from_standby: bool = False
    bin_dir_configured: bool = True  # False: bin_dir was guessed; the server's major picks the real one
    incremental: bool = False  # PostgreSQL 17+: only what changed since the parent (ops/backup/incremental.py)
    incremental_from: str | None = None  # the parent's id; None: the newest complete backup
    standby_conninfos: tuple[str, ...] = ()  # the cluster's replicas, tried in order for --from-standby
    manifest_checksums: str = "CRC32C"  # per-file checksums in backup_manifest (objects are SHA-256'd anyway)
    fast_checkpoint: bool = True
    lock_ttl_seconds: float = 300.0
    # zstd base backups compressed by the server (pg_basebackup --compress=server-zstd): the tars
    # arrive compressed and are stored as they are (envelope.put_object precompressed=True)
    server_compression: bool = False


@dataclasses.dataclass(frozen=True)
class BackupResult:
    """What one `backup` or `dump` run committed (dumps reuse it as ops.dump.logical.DumpResult)."""

    record: BackupRecord
    seconds: float
    cleaned: tuple[str, ...]  # ids of leftovers of killed runs that were deleted first

    def to_dict(self) -> dict[str, Any]:
        doc = self.record.to_json()
        if self.record.kind == "logical":
            doc["databases"] = [d.name for d in self.record.databases]
        doc.update({"seconds": round(self.seconds, 3), "cleaned_leftovers": list(self.cleaned)})
        return doc


# --- the use case --------------------------------------------------------------------------------


def run_backup(
    request: BackupRequest,
    *,
    storage: Storage,
    codec: Codec,
    runner: Runner,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_bytes: OnBytes | None = None,
    tmp_root: str | None = None,
    keys: Mapping[str, Any] | None = None,
) -> BackupResult:
    """Take one physical backup (full, or incremental on its parent) and commit it. Raises LockHeld when
    another backup runs; UsageError, before anything is stored, when an incremental cannot be taken."""
    started_mono = time.monotonic()
    source = choose_source(
        request.conninfo, request.standby_conninfos, request.from_standby, request.cluster, request.bin_dir, runner
    )
    bin_dir = bin_dir_for_server(request.bin_dir, request.bin_dir_configured, source.major, runner)
    request = dataclasses.replace(request, bin_dir=bin_dir)
    if request.incremental:
        check_server_supports(source)
    if keys is None:
        keys = {codec.key.id: codec.key} if codec.key else {}
    kind = INCREMENTAL if request.incremental else PHYSICAL
    lock = RepositoryLock(
        storage, request.cluster, "backup", command="backup", ttl=timedelta(seconds=request.lock_ttl_seconds)
    )
    # the repository and cluster markers; a server of another system identifier is refused here
    marker.ensure_cluster_marker(storage, request.cluster, source.system_identifier, what="back up into this cluster")
    codec = dataclasses.replace(codec, system_identifier=str(source.system_identifier))  # bound into every object
    with lock:
        cleaned = catalog.clean_leftovers(storage, request.cluster, kind=PHYSICAL, older_than=lock.acquired_at)
        for leftover in cleaned:
            log.info("removed %d objects of the interrupted backup %s", len(leftover.objects), leftover.backup_id)
        parent = None
        if request.incremental:
            parent = choose_parent(storage, request.cluster, keys, source, request.incremental_from)
        backup_id = new_backup_id(clock(), kind)
        while catalog.id_taken(storage, request.cluster, backup_id):
            backup_id = next_backup_id(backup_id)
        phase(
            "backup",
            "start backup",
            backup_id=backup_id,
            kind=kind,
            parent=parent.id if parent else None,
            source="standby" if source.in_recovery else "primary",
            server_version=source.version,
        )
        with contextlib.ExitStack() as stack:
            extra: tuple[str, ...] = ()
            if parent is not None:
                manifest_path = stack.enter_context(parent_manifest(storage, request.cluster, parent, keys, tmp_root))
                extra = (f"--incremental={manifest_path}",)
            facts = stack.enter_context(slot_session(source.conninfo, request.bin_dir, runner))
            start_time = clock()
            stream = functools.partial(
                stream_basebackup,
                request.bin_dir,
                source.conninfo,
                facts,
                request.cluster,
                backup_id,
                storage,
                codec,
                runner,
                on_bytes,
                tmp_root,
                fast_checkpoint=request.fast_checkpoint,
                manifest_checksums=request.manifest_checksums,
                extra=extra,
            )
            spec = server_compression_spec(request.server_compression, source.major, codec)
            stored, manifest, compressed_on = stream_with_fallback(stream, spec)
            stop_time = clock()
        record = _record(request, facts, backup_id, start_time, stop_time, stored, manifest, codec, source)
        record = dataclasses.replace(record, compressed_on=compressed_on if codec.compression != "none" else None)
        if parent is not None:
            record = dataclasses.replace(record, kind=INCREMENTAL, parent=parent.id)
        lock.check()
        catalog.commit(storage, record, codec)
        phase(
            "backup",
            "catalog written",
            backup_id=backup_id,
            bytes=record.size_bytes,
            stored_bytes=record.stored_bytes,
            start_lsn=record.start_lsn,
            stop_lsn=record.stop_lsn,
        )
    return BackupResult(record, time.monotonic() - started_mono, tuple(lo.backup_id for lo in cleaned))


# --- the record ------------------------------------------------------------------------------------


def wal_range(manifest: dict[str, Any]) -> tuple[int, Lsn, Lsn]:
    """(timeline, start LSN, stop LSN) from backup_manifest's WAL-Ranges."""
    ranges: Sequence[dict[str, Any]] = manifest.get("WAL-Ranges") or []
    if not ranges:
        raise IntegrityError("backup_manifest has no WAL-Ranges")
    first, last = ranges[0], ranges[-1]
    return int(last["Timeline"]), Lsn.parse(first["Start-LSN"]), Lsn.parse(last["End-LSN"])


def _record(
    request: BackupRequest,
    facts: ServerFacts,
    backup_id: str,
    start_time: datetime,
    stop_time: datetime,
    stored: list[StoredFile],
    manifest: dict[str, Any],
    codec: Codec,
    source: ServerFacts,
) -> BackupRecord:
    timeline, start_lsn, stop_lsn = wal_range(manifest)
    names = {s.name for s in stored}
    return BackupRecord(
        id=backup_id,
        cluster=request.cluster,
        kind=PHYSICAL,
        start_time=start_time,
        stop_time=stop_time,
        size_bytes=sum(s.size for s in stored),
        stored_bytes=sum(s.stored_size for s in stored),
        compression=codec.compression,
        compression_level=codec.level,
        encrypted=codec.key is not None,
        key_id=codec.key.id if codec.key else None,
        pg_version=facts.version,
        pg_version_num=facts.version_num,
        system_identifier=facts.system_identifier,
        timeline=timeline,
        start_lsn=start_lsn,
        stop_lsn=stop_lsn,
        from_standby=source.in_recovery,
        wal_included=True,
        objects=tuple(stored),
        tablespaces=tuple(t for t in facts.tablespaces if t.object_name in names),
        host=socket.gethostname(),
        opsdb_version=__version__,
    )


def backup_from_settings(
    settings: Settings,
    cluster: str,
    *,
    from_standby: bool = False,
    incremental: bool = False,
    incremental_from: str | None = None,
    on_bytes: OnBytes | None = None,
) -> BackupResult:
    """The CLI's one call: build storage, codec and runner from config.Settings and run the backup."""
    from opsdb.ops.common.codec import repository
    from opsdb.pg.tools import find_bin_dir
    from opsdb.proc import LocalRunner

    cfg = settings.clusters[cluster]
    repo = repository(settings, writable=True)
    request = BackupRequest(
        cluster=cluster,
        conninfo=cfg.conninfo,
        bin_dir=find_bin_dir(cfg.pg_bin_dir),
        bin_dir_configured=cfg.pg_bin_dir is not None,
        from_standby=from_standby,
        standby_conninfos=tuple(r.conninfo for r in cfg.replicas),
        incremental=incremental,
        incremental_from=incremental_from,
        server_compression=settings.compression.location == "server",
    )
    return run_backup(
        request, storage=repo.storage, codec=repo.codec, runner=LocalRunner(), on_bytes=on_bytes, keys=repo.keys
    )
