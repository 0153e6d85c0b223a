"""`opsdb backup --incremental`: what an incremental builds on, and whether the server can make one.

PostgreSQL 17 made incremental backups part of the server: with `summarize_wal = on` the WAL
summarizer records which blocks every stretch of WAL changed, and `pg_basebackup
--incremental=PARENT_MANIFEST` sends only the blocks changed since the parent backup's start (whole
files for the small ones), as the same tar streams a full backup is. opsdb uses that machinery as it is:
the parent's `backup_manifest` is fetched from the repository (it is stored with every backup), handed
to pg_basebackup, and the new backup streams into the repository like a full one. The catalog records
kind "incremental" and the parent's id; a restore combines the chain with pg_combinebackup
(ops/recovery/restore_chain.py).

Everything here runs before anything is stored: an unsupported server or a missing parent is a usage
error (exit 2) that leaves the repository untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from opsdb.errors import IntegrityError, NotFound, UsageError
from opsdb.model.catalog import MANIFEST_OBJECT, PHYSICAL, BackupRecord
from opsdb.ops.backup.source import ServerFacts
from opsdb.repo import catalog, envelope, layout
from opsdb.storage.base import Storage

MIN_MAJOR = 17  # pg_basebackup --incremental and pg_combinebackup arrived in PostgreSQL 17


def check_server_supports(facts: ServerFacts) -> None:
    """UsageError (exit 2) with the reason when this server cannot take an incremental backup."""
    if facts.major < MIN_MAJOR:
        raise UsageError(
            f"incremental backups need PostgreSQL {MIN_MAJOR} or later; this server is PostgreSQL {facts.version}",
            hint="take a full backup with `opsdb backup` (without --incremental)",
        )
    if not facts.summarize_wal:
        raise UsageError(
            "incremental backups need summarize_wal = on on the server; it is off",
            hint="ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); then take a full backup to build on",
        )


def choose_parent(
    storage: Storage, cluster: str, keys: Mapping[str, Any], facts: ServerFacts, from_id: str | None
) -> BackupRecord:
    """The backup the incremental builds on: `from_id`, else the newest complete full or incremental
    backup of this cluster. It must be of the same server (system identifier) and have its manifest."""
    if from_id is not None:
        try:
            parent = catalog.load_backup(storage, cluster, from_id, keys)
        except NotFound as exc:
            raise UsageError(exc.message, hint="pick a backup id from `opsdb backups list`") from None
        if not parent.is_physical:
            raise UsageError(f"--from {from_id}: a logical dump cannot be the parent of an incremental backup")
    else:
        backups = catalog.list_backups(storage, cluster, keys, kind=PHYSICAL)
        same = [b for b in backups if b.system_identifier in (None, facts.system_identifier)]
        if not same:
            raise UsageError(
                f"no complete backup of cluster {cluster!r} to build an incremental backup on",
                hint="take a full backup with `opsdb backup` first",
            )
        parent = same[-1]
    if parent.system_identifier not in (None, facts.system_identifier):
        raise UsageError(
            f"backup {parent.id} is of another server (system identifier {parent.system_identifier}, "
            f"this server {facts.system_identifier}): it cannot be the parent of an incremental backup"
        )
    if parent.object(MANIFEST_OBJECT) is None:
        raise UsageError(
            f"backup {parent.id} has no backup_manifest in the repository: it cannot be the parent of an incremental",
            hint="take a full backup with `opsdb backup`",
        )
    return parent


@contextlib.contextmanager
def parent_manifest(
    storage: Storage, cluster: str, parent: BackupRecord, keys: Mapping[str, Any], tmp_root: str | None = None
) -> Iterator[Path]:
    """The parent's backup_manifest fetched (decrypted, checked) into a private temporary file, for
    `pg_basebackup --incremental=FILE`; removed afterwards."""
    key = layout.backup_object(cluster, parent.id, MANIFEST_OBJECT)
    fd, name = tempfile.mkstemp(prefix="opsdb-parent-manifest-", dir=tmp_root)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                for chunk in envelope.get_object(storage, key, keys):
                    fh.write(chunk)
            except NotFound:
                raise IntegrityError(
                    f"the backup_manifest of backup {parent.id} is missing from the repository ({key})"
                ) from None
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
