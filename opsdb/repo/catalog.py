"""The catalog and its commit protocol.

A backup (or dump) with id X of cluster C is written in this order:
  1. its data objects under clusters/C/backups/X/ (base.tar, pg_tblspc-<oid>.tar, backup_manifest,
     pg_dump/<db>.dump, globals.sql), each create-only;
  2. its own manifest clusters/C/backups/X/opsdb-manifest.json: the full record, create-only;
  3. LAST, the catalog entry clusters/C/catalog/X.json: the same record, create-only.
Readers list only catalog entries, so a run killed at any moment leaves nothing that looks
complete. Objects under backups/X/ without a catalog entry are leftovers of a killed run: readers
ignore them, and the next run of the same kind (holding the cluster's lock) deletes those older
than its lock with `clean_leftovers`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opsdb.errors import Conflict, IntegrityError, NotFound, OperationFailed
from opsdb.model.catalog import INCREMENTAL, PHYSICAL, BackupRecord, kind_of_id
from opsdb.repo import envelope, layout
from opsdb.storage.base import ObjectInfo, Storage

if TYPE_CHECKING:  # types only: cryptography is imported by stream.crypto alone
    from opsdb.stream.crypto import EncryptionKey

MANIFEST_NAME = "opsdb-manifest.json"


@dataclasses.dataclass(frozen=True)
class Leftover:
    """Objects of a backup id that has no catalog entry (a run that did not commit)."""

    backup_id: str
    objects: tuple[ObjectInfo, ...]

    @property
    def newest_mtime(self) -> float:
        return max((o.mtime for o in self.objects), default=0.0)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)


def store_manifest(storage: Storage, record: BackupRecord, codec: envelope.Codec) -> None:
    """Step 2: the backup's own copy of its record, beside its data (create-only)."""
    key = layout.backup_object(record.cluster, record.id, MANIFEST_NAME)
    envelope.put_json(storage, key, record.to_dict(), codec, if_absent=True)


def commit(storage: Storage, record: BackupRecord, codec: envelope.Codec) -> None:
    """Steps 2 and 3: write the manifest, then publish the catalog entry (create-only, last).

    Call only after every data object of the record is stored."""
    try:
        store_manifest(storage, record, codec)
        envelope.put_json(
            storage, layout.catalog_entry(record.cluster, record.id), record.to_dict(), codec, if_absent=True
        )
    except Conflict:
        raise OperationFailed(
            f"unable to commit backup {record.id}: its manifest or catalog entry already exists",
            hint="two runs used the same id; the existing entry was left untouched",
        ) from None


def _entry_id(key: str, prefix: str) -> str | None:
    name = key[len(prefix) :]
    if "/" in name or not name.endswith(".json"):
        return None
    return name[: -len(".json")]


def list_backups(
    storage: Storage,
    cluster: str,
    keys: Mapping[str, EncryptionKey],
    *,
    kind: str | None = None,
    skip_unreadable: bool = False,
) -> list[BackupRecord]:
    """Committed backups and dumps of the cluster, oldest first (ids sort by start time).

    `kind` filters on "physical" (base backups: full and incremental ones) / "incremental" / "logical".
    An entry that cannot be read (wrong key, tampered) raises IntegrityError naming it, unless skip_unreadable."""
    prefix = layout.catalog_prefix(cluster)
    records: list[BackupRecord] = []
    for info in storage.list(prefix):
        backup_id = _entry_id(info.key, prefix)
        if backup_id is None:
            continue
        try:
            record = _read_entry(storage, info.key, keys, backup_id)
        except IntegrityError:
            if skip_unreadable:
                continue
            raise
        if kind is None or record.kind == kind or (kind == PHYSICAL and record.is_physical):
            records.append(record)
    return sorted(records, key=lambda r: (r.start_time, r.id))


def load_backup(storage: Storage, cluster: str, backup_id: str, keys: Mapping[str, EncryptionKey]) -> BackupRecord:
    """One committed record; NotFound when the id has no catalog entry (uncommitted or unknown)."""
    key = layout.catalog_entry(cluster, backup_id)
    try:
        return _read_entry(storage, key, keys, backup_id)
    except NotFound:
        raise NotFound(
            f"no backup {backup_id!r} in the catalog of cluster {cluster!r}", hint="see `opsdb backups list`"
        ) from None


def latest_backup(
    storage: Storage, cluster: str, keys: Mapping[str, EncryptionKey], *, kind: str = "physical"
) -> BackupRecord:
    records = list_backups(storage, cluster, keys, kind=kind)
    if not records:
        what = "physical backup" if kind == "physical" else "dump"
        raise NotFound(
            f"no complete {what} of cluster {cluster!r} in the repository",
            hint="run `opsdb backup`" if kind == "physical" else "run `opsdb dump`",
        )
    return records[-1]


def _read_entry(storage: Storage, key: str, keys: Mapping[str, EncryptionKey], backup_id: str) -> BackupRecord:
    """The record stored under key, which must be the record of backup_id: an entry copied or renamed
    under another id would otherwise list one backup twice and restore it under the wrong name."""
    doc: Any = envelope.get_json(storage, key, keys)
    if not isinstance(doc, dict):
        raise IntegrityError(f"object {key} is not a catalog record")
    try:
        record = BackupRecord.from_dict(doc)
    except ValueError as exc:
        raise IntegrityError(f"object {key}: {exc}") from None
    if record.id != backup_id:
        raise IntegrityError(
            f"catalog entry {key} is named {backup_id} but holds backup {record.id}: "
            "it was copied or renamed, and is not used",
            hint=f"remove {key} (backup {record.id} keeps its own entry) and run `opsdb verify`",
        )
    return record


def committed_ids(storage: Storage, cluster: str) -> set[str]:
    """Ids with a catalog entry (no decoding: just the listing)."""
    prefix = layout.catalog_prefix(cluster)
    return {i for info in storage.list(prefix) if (i := _entry_id(info.key, prefix)) is not None}


def id_taken(storage: Storage, cluster: str, backup_id: str) -> bool:
    """True when the id has a catalog entry or any object (a leftover) in the repository."""
    if storage.stat(layout.catalog_entry(cluster, backup_id)) is not None:
        return True
    return next(iter(storage.list(layout.backup_prefix(cluster, backup_id))), None) is not None


def find_leftovers(storage: Storage, cluster: str, *, kind: str | None = None) -> list[Leftover]:
    """Backup ids with objects but no catalog entry and no retention deletion marker."""
    committed = committed_ids(storage, cluster)
    deleting_prefix = layout.deleting_prefix(cluster)
    deleting = {_entry_id(i.key, deleting_prefix) for i in storage.list(deleting_prefix)}
    root = layout.cluster_prefix(cluster) + "backups/"
    by_id: dict[str, list[ObjectInfo]] = {}
    for info in storage.list(root):
        backup_id = info.key[len(root) :].split("/", 1)[0]
        by_id.setdefault(backup_id, []).append(info)
    out = []
    for backup_id, objects in sorted(by_id.items()):
        if backup_id in committed or backup_id in deleting:
            continue
        if kind is not None and _lock_kind(kind_of_id(backup_id)) != _lock_kind(kind):
            continue  # another kind's run (its own lock) may be writing it right now
        out.append(Leftover(backup_id, tuple(objects)))
    return out


def _lock_kind(kind: str | None) -> str | None:
    """Full and incremental backups run under the same "backup" lock: their leftovers are one kind."""
    return PHYSICAL if kind == INCREMENTAL else kind


def clean_leftovers(storage: Storage, cluster: str, *, kind: str, older_than: float) -> list[Leftover]:
    """Delete leftovers of `kind` whose newest object is older than `older_than` (epoch seconds).

    Call while holding the cluster's lock for `kind`, with older_than = when that lock was taken:
    any run of that kind that wrote them is then known to be gone."""
    removed = []
    for leftover in find_leftovers(storage, cluster, kind=kind):
        if leftover.newest_mtime >= older_than:
            continue
        if storage.stat(layout.catalog_entry(cluster, leftover.backup_id)) is not None:
            continue  # committed meanwhile (cannot happen under the lock; cheap to re-check)
        storage.delete([o.key for o in leftover.objects])
        removed.append(leftover)
    return removed
