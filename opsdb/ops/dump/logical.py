"""`opsdb dump` and `opsdb restore-dump`: logical dumps streamed into and out of the repository.

dump: under the cluster's "dump" lock, `pg_dump -Fc` of each database (all non-template databases
that accept connections, or the ones asked for) is streamed through put_object into
backups/<id>/pg_dump/<db>.dump, then `pg_dumpall --globals-only` (roles without their password
hashes unless --with-passwords) into globals.sql; one catalog entry lists them all and is
committed last (repo/catalog.py), as for physical backups.

restore-dump: every target database is checked first (missing: created with the properties the
dump recorded, see ops/dump/database.py; existing and holding relations: refused without --clean),
then globals (when asked) are fed to psql and each dump to pg_restore on its stdin. pg_restore
--jobs needs a seekable file, so with --jobs > 1 (or --as, which reads the archive twice) each dump
is first written to a temporary file (mode 0600, removed afterwards).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdb import __version__
from opsdb.errors import UsageError
from opsdb.model.catalog import (
    GLOBALS_OBJECT,
    LOGICAL,
    BackupRecord,
    DumpDatabase,
    StoredFile,
    dump_object_name,
    new_backup_id,
    next_backup_id,
)
from opsdb.model.units import human_bytes
from opsdb.ops.backup.physical import BackupResult
from opsdb.ops.common.estimate import announce_total
from opsdb.ops.common.phases import phase
from opsdb.ops.dump.database import database_sql
from opsdb.pg import conn as pgconn
from opsdb.pg.conninfo import redact, with_dbname
from opsdb.pg.tools import PgTools
from opsdb.proc import Runner
from opsdb.repo import catalog, envelope, layout, marker
from opsdb.repo.envelope import Codec
from opsdb.repo.lock import RepositoryLock
from opsdb.storage.base import Storage

if TYPE_CHECKING:
    from opsdb.config import Settings

log = logging.getLogger("opsdb.dump")
OnBytes = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class DumpRequest:
    cluster: str
    conninfo: str
    bin_dir: Path
    databases: tuple[str, ...] = ()  # empty: every non-template database
    with_passwords: bool = False
    lock_ttl_seconds: float = 300.0


DumpResult = BackupResult  # one result shape for both kinds of run


def run_dump(
    request: DumpRequest,
    *,
    storage: Storage,
    codec: Codec,
    runner: Runner,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_bytes: OnBytes | None = None,
) -> DumpResult:
    started = time.monotonic()
    tools = PgTools(request.bin_dir)
    with pgconn.connect(request.conninfo) as c:
        existing = c.databases(exclude_templates=True)
        version, version_num = c.server_version().split()[0], c.server_version_num()
        system_identifier = str(c.system_identifier())
    unknown = [d for d in request.databases if d not in existing]
    if unknown:
        raise UsageError(
            f"unable to dump database {unknown[0]!r}: no such database on {redact(request.conninfo)}",
            hint=f"databases: {', '.join(existing) or 'none'}",
        )
    databases = list(dict.fromkeys(request.databases)) or existing
    lock = RepositoryLock(
        storage, request.cluster, "dump", command="dump", ttl=timedelta(seconds=request.lock_ttl_seconds)
    )
    marker.ensure_cluster_marker(storage, request.cluster, system_identifier, what="dump into this cluster")
    codec = dataclasses.replace(codec, system_identifier=system_identifier)  # bound into every object
    with lock:
        cleaned = catalog.clean_leftovers(storage, request.cluster, kind=LOGICAL, older_than=lock.acquired_at)
        dump_id = new_backup_id(clock(), LOGICAL)
        while catalog.id_taken(storage, request.cluster, dump_id):
            dump_id = next_backup_id(dump_id)
        start_time = clock()

        def store(cmd: Any, name: str, role: str, doing: str) -> StoredFile:
            return _store_stream(runner, cmd, storage, request.cluster, dump_id, name, codec, on_bytes, role, doing)

        stored: list[StoredFile] = []
        entries: list[DumpDatabase] = []
        for db in databases:
            name = dump_object_name(db)
            phase("dump", "dump database", dump_id=dump_id, database=db)
            cmd = tools.pg_dump(request.conninfo, dbname=db, extra=("-Z", "0"))  # compressed once, by the codec
            stored.append(store(cmd, name, "dump", f"dumping database {db}"))
            entries.append(DumpDatabase(db, name))
        cmd = tools.pg_dumpall(request.conninfo, globals_only=True, no_role_passwords=not request.with_passwords)
        stored.append(store(cmd, GLOBALS_OBJECT, "globals", "dumping roles and tablespaces"))
        record = BackupRecord(
            id=dump_id,
            cluster=request.cluster,
            kind=LOGICAL,
            start_time=start_time,
            stop_time=clock(),
            size_bytes=sum(s.size for s in stored),
            stored_bytes=sum(s.stored_size for s in stored),
            compression=codec.compression,
            compression_level=codec.level,
            encrypted=codec.key is not None,
            key_id=codec.key.id if codec.key else None,
            pg_version=version,
            pg_version_num=version_num,
            system_identifier=system_identifier,
            objects=tuple(stored),
            databases=tuple(entries),
            globals_object=GLOBALS_OBJECT,
            with_passwords=request.with_passwords,
            host=socket.gethostname(),
            opsdb_version=__version__,
        )
        lock.check()
        catalog.commit(storage, record, codec)
        phase(
            "dump",
            "catalog written",
            dump_id=dump_id,
            databases=len(entries),
            bytes=record.size_bytes,
            stored_bytes=record.stored_bytes,
        )
    return DumpResult(record, time.monotonic() - started, tuple(lo.backup_id for lo in cleaned))


def _store_stream(
    runner: Runner,
    cmd: Any,
    storage: Storage,
    cluster: str,
    dump_id: str,
    name: str,
    codec: Codec,
    on_bytes: OnBytes | None,
    role: str,
    doing: str,
) -> StoredFile:
    key = layout.backup_object(cluster, dump_id, name)
    with runner.stream(cmd, doing=doing) as proc:
        # the dump's digest is of the compressed bytes (envelope version 2): nothing compares it
        # with a local file, and it spares hashing the whole plaintext
        obj = envelope.put_object(
            storage, key, proc.chunks(), codec, if_absent=True, on_bytes=on_bytes, plaintext_digest=False
        )
    return StoredFile(name, obj.size, obj.stored_size, obj.sha256, role, obj.digest_of)


# --- restore-dump ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RestoreDumpResult:
    dump_id: str
    databases: tuple[str, ...]
    created: tuple[str, ...]
    globals_restored: bool
    bytes_read: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        made = f" (created {', '.join(self.created)})" if self.created else ""
        rate = f", {human_bytes(self.bytes_read / self.seconds)}/s" if self.seconds > 0 else ""
        return (
            f"restored dump {self.dump_id}: {', '.join(self.databases) or 'no databases'}{made}"
            f"{' + globals' if self.globals_restored else ''}; {human_bytes(self.bytes_read)} in {self.seconds:.1f} s{rate}"
        )


_USER_RELATIONS = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "AND n.nspname NOT LIKE 'pg\\_temp%'"
)


def restore_dump(
    dump_id: str,
    *,
    cluster: str,
    storage: Storage,
    keys: Mapping[str, Any],
    runner: Runner,
    bin_dir: Path,
    conninfo: str,
    databases: tuple[str, ...] = (),
    jobs: int = 1,
    clean: bool = False,
    with_globals: bool = False,
    rename: str | None = None,
    on_bytes: OnBytes | None = None,
    tmp_root: str | None = None,
) -> RestoreDumpResult:
    """Restore some or all databases of a dump into the server at `conninfo`."""
    started = time.monotonic()
    record = catalog.load_backup(storage, cluster, dump_id, keys)
    if record.kind != LOGICAL:
        raise UsageError(f"{dump_id} is a physical backup: restore it with `opsdb restore --backup {dump_id}`")
    by_name = {d.name: d for d in record.databases}
    unknown = [d for d in databases if d not in by_name]
    if unknown:
        raise UsageError(f"dump {dump_id} has no database {unknown[0]!r} (has: {', '.join(by_name) or 'none'})")
    chosen = [by_name[d] for d in dict.fromkeys(databases)] if databases else list(record.databases)
    if rename is not None and len(chosen) != 1:
        raise UsageError(
            f"--as renames one database, but {len(chosen)} are chosen from dump {dump_id}",
            hint="choose the database to rename with --database NAME",
        )
    targets = [(entry, rename or entry.name) for entry in chosen]
    to_create = _check_targets(conninfo, [target for _, target in targets], clean)
    tools = PgTools(bin_dir)
    sizes = {o.name: o.size for o in record.objects}
    wanted = [e.object for e in chosen] + ([record.globals_object] if with_globals and record.globals_object else [])
    announce_total(on_bytes, sum(sizes.get(name or "", 0) for name in wanted))  # the progress bar's 100 %
    total = 0
    if with_globals:
        if not record.globals_object:
            raise UsageError(f"dump {dump_id} holds no globals")
        chunks = _counted(
            envelope.get_object(storage, layout.backup_object(cluster, dump_id, record.globals_object), keys), on_bytes
        )
        # "role ... already exists" is expected on a populated server: do not stop at the first error
        runner.feed(tools.psql(conninfo, on_error_stop=False), chunks, doing="restoring roles and tablespaces")
        total += chunks.count
    for entry, target in targets:
        phase("restore-dump", "restore database", dump_id=dump_id, database=entry.name, into=target)
        key = layout.backup_object(cluster, dump_id, entry.object)
        chunks = _counted(envelope.get_object(storage, key, keys), on_bytes)
        into = with_dbname(conninfo, target)
        doing = f"restoring database {entry.name}" + (f" as {target}" if target != entry.name else "")
        if target not in to_create:
            total += _pg_restore(runner, tools, into, chunks, jobs, doing, tmp_root, clean=clean)
        elif target == entry.name:
            # --create from the maintenance database: CREATE DATABASE with the dump's encoding, locale
            # and owner, then its comment, ACL and settings, then the contents
            total += _pg_restore(runner, tools, conninfo, chunks, jobs, doing, tmp_root, create=True)
        else:

            def create_renamed(archive: str, old: str = entry.name, new: str = target) -> None:
                sql = database_sql(runner, tools, archive, old, new)
                runner.feed(tools.psql(conninfo), [sql.encode()], doing=f"creating database {new} as {old} was")

            total += _pg_restore(runner, tools, into, chunks, jobs, doing, tmp_root, prepare=create_renamed)
    return RestoreDumpResult(
        dump_id, tuple(t for _, t in targets), tuple(to_create), with_globals, total, time.monotonic() - started
    )


class _counted:
    """An iterator that counts (and reports) the bytes passing through."""

    def __init__(self, chunks: Any, on_bytes: OnBytes | None) -> None:
        self._it = iter(chunks)
        self.count = 0
        self._on = on_bytes

    def __iter__(self) -> _counted:
        return self

    def __next__(self) -> bytes:
        chunk: bytes = next(self._it)
        self.count += len(chunk)
        if self._on is not None:
            self._on(len(chunk))
        return chunk


def _pg_restore(
    runner: Runner,
    tools: PgTools,
    conninfo: str,
    chunks: _counted,
    jobs: int,
    doing: str,
    tmp_root: str | None,
    *,
    clean: bool = False,
    create: bool = False,
    prepare: Callable[[str], None] | None = None,
) -> int:
    """pg_restore fed from the stream; staged in a temp file (0600, removed after) when it needs a
    seekable file: parallel jobs, or `prepare` reading the archive first. Returns bytes read."""
    if jobs <= 1 and prepare is None:
        runner.feed(tools.pg_restore(conninfo, clean=clean, create=create), chunks, doing=doing)
        return chunks.count
    fd, path = tempfile.mkstemp(prefix="opsdb-restore-dump-", suffix=".dump", dir=tmp_root)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        if prepare is not None:
            prepare(path)
        cmd = tools.pg_restore(conninfo, input_path=path, clean=clean, create=create, jobs=jobs if jobs > 1 else None)
        runner.run(cmd, doing=doing)
    finally:
        os.unlink(path)
    return chunks.count


def _check_targets(conninfo: str, names: list[str], clean: bool) -> list[str]:
    """Databases to create; UsageError (nothing changed) for an existing non-empty one without --clean."""
    with pgconn.connect(conninfo) as c:
        present = {r["datname"] for r in c.fetchall("SELECT datname FROM pg_database")}
    missing = [n for n in names if n not in present]
    if clean:
        return missing
    for name in names:
        if name in missing:
            continue
        with pgconn.connect(with_dbname(conninfo, name)) as c:
            relations = int(c.fetchval(_USER_RELATIONS))
        if relations:
            raise UsageError(
                f"unable to restore database {name}: it exists on {redact(conninfo)} and holds {relations} relations",
                hint="pass --clean to drop and recreate its objects, or restore into another server",
            )
    return missing


# --- from settings ---------------------------------------------------------------------------------


def dump_from_settings(
    settings: Settings,
    cluster: str,
    *,
    databases: tuple[str, ...] = (),
    with_passwords: bool = False,
    on_bytes: OnBytes | None = None,
) -> DumpResult:
    from opsdb.ops.common.codec import repository
    from opsdb.pg.tools import find_bin_dir
    from opsdb.proc import LocalRunner

    cfg = settings.clusters[cluster]
    repo = repository(settings, writable=True)
    request = DumpRequest(cluster, cfg.conninfo, find_bin_dir(cfg.pg_bin_dir), databases, with_passwords)
    return run_dump(request, storage=repo.storage, codec=repo.codec, runner=LocalRunner(), on_bytes=on_bytes)


def restore_dump_from_settings(
    settings: Settings,
    cluster: str,
    dump_id: str,
    *,
    conninfo: str,
    databases: tuple[str, ...] = (),
    jobs: int = 1,
    clean: bool = False,
    with_globals: bool = False,
    rename: str | None = None,
    on_bytes: OnBytes | None = None,
) -> RestoreDumpResult:
    from opsdb.ops.common.codec import repository
    from opsdb.pg.tools import find_bin_dir
    from opsdb.proc import LocalRunner

    cfg = settings.clusters[cluster]
    repo = repository(settings)
    return restore_dump(
        dump_id,
        cluster=cluster,
        storage=repo.storage,
        keys=repo.keys,
        runner=LocalRunner(),
        bin_dir=find_bin_dir(cfg.pg_bin_dir),
        conninfo=conninfo,
        databases=databases,
        jobs=jobs,
        clean=clean,
        with_globals=with_globals,
        rename=rename,
        on_bytes=on_bytes,
    )
