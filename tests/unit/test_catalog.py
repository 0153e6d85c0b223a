"""Catalog records, ids, and the commit protocol over MemoryStorage."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from opsdb.errors import IntegrityError, NotFound, OperationFailed, UsageError
from opsdb.model.catalog import (
    BackupRecord,
    DumpDatabase,
    StoredFile,
    Tablespace,
    dump_object_name,
    kind_of_id,
    new_backup_id,
    next_backup_id,
    parse_backup_id,
)
from opsdb.model.lsn import Lsn
from opsdb.repo import catalog, envelope, layout
from opsdb.repo.envelope import Codec
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.crypto import EncryptionKey

T0 = datetime(2026, 11, 21, 10, 15, 0, tzinfo=UTC)
KEY = EncryptionKey.from_secret(bytes(range(32)))
CODEC = Codec("zstd", 3, 0, KEY, True)
KEYS = {KEY.id: KEY}


def record(backup_id: str = "20261121T101500Z-F", kind: str = "physical", **kw: object) -> BackupRecord:
    base = dict(
        id=backup_id,
        cluster="main",
        kind=kind,
        start_time=T0,
        stop_time=T0 + timedelta(seconds=42),
        size_bytes=1000,
        stored_bytes=100,
        compression="zstd",
        encrypted=True,
        key_id=KEY.id,
        timeline=1,
        start_lsn=Lsn.parse("0/4000028"),
        stop_lsn=Lsn.parse("0/4000100"),
        system_identifier="7300000000000000001",
        objects=(StoredFile("base.tar", 1000, 100, "ab" * 32, "base"),),
        tablespaces=(Tablespace(16385, "ts1", "/srv/ts1"),),
    )
    base.update(kw)
    return BackupRecord(**base)  # type: ignore[arg-type]


def test_ids_sort_by_time_and_carry_the_kind() -> None:
    full = new_backup_id(T0, "physical")
    dump = new_backup_id(T0 + timedelta(hours=1), "logical")
    assert full == "20261121T101500Z-F"
    assert dump == "20261121T111500Z-D"
    assert sorted([dump, full]) == [full, dump]
    assert parse_backup_id(full) == (T0, "physical")
    assert kind_of_id(dump) == "logical"
    assert kind_of_id("whatever") is None
    assert next_backup_id(full) == "20261121T101501Z-F"
    with pytest.raises(UsageError):
        parse_backup_id("2026-11-21")


def test_to_json_has_exactly_the_spec_fields() -> None:
    row = record().to_json()
    assert list(row) == [
        "id",
        "kind",
        "cluster",
        "status",
        "start_time",
        "stop_time",
        "start_lsn",
        "stop_lsn",
        "timeline",
        "size_bytes",
        "stored_bytes",
        "encrypted",
        "compression",
        "parent",
    ]
    assert row["start_time"] == "2026-11-21T10:15:00.000Z"
    assert row["start_lsn"] == "0/4000028"
    assert row["status"] == "complete"


def test_round_trip_through_dict() -> None:
    rec = record(databases=(DumpDatabase("app", "pg_dump/app.dump"),), globals_object="globals.sql")
    again = BackupRecord.from_dict(rec.to_dict())
    assert again == rec
    assert again.ratio == 0.1
    assert again.duration == timedelta(seconds=42)


def test_from_dict_tolerates_minimal_entries_and_rejects_garbage() -> None:
    minimal = BackupRecord.from_dict({"id": "x", "start_time": "2026-11-21T10:15:00+00:00"})
    assert minimal.kind == "physical" and minimal.stop_time == minimal.start_time and minimal.start_lsn is None
    with pytest.raises(ValueError, match="malformed catalog record"):
        BackupRecord.from_dict({"id": "x", "start_time": "yesterday"})


def test_dump_object_names_are_safe_keys() -> None:
    assert dump_object_name("app") == "pg_dump/app.dump"
    odd = dump_object_name("my db/../x")
    assert odd.startswith("pg_dump/x-") and "/" not in odd[len("pg_dump/") :]


def test_commit_writes_manifest_then_entry_and_lists_only_committed() -> None:
    storage = MemoryStorage()
    rec = record()
    envelope.put_object(storage, layout.backup_object("main", rec.id, "base.tar"), [b"x" * 1000], CODEC)
    # an uncommitted run: objects but no catalog entry
    envelope.put_object(storage, layout.backup_object("main", "20261121T120000Z-F", "base.tar"), [b"y"], CODEC)
    assert catalog.list_backups(storage, "main", KEYS) == []
    catalog.commit(storage, rec, CODEC)
    assert storage.stat(layout.backup_object("main", rec.id, catalog.MANIFEST_NAME)) is not None
    listed = catalog.list_backups(storage, "main", KEYS)
    assert [r.id for r in listed] == [rec.id]
    assert catalog.load_backup(storage, "main", rec.id, KEYS) == rec
    assert catalog.latest_backup(storage, "main", KEYS).id == rec.id
    with pytest.raises(NotFound):
        catalog.load_backup(storage, "main", "20261121T120000Z-F", KEYS)
    with pytest.raises(NotFound, match="dump"):
        catalog.latest_backup(storage, "main", KEYS, kind="logical")
    # committing the same id again never replaces the entry
    with pytest.raises(OperationFailed, match="already exists"):
        catalog.commit(storage, record(size_bytes=5), CODEC)


def test_kind_filter_and_order() -> None:
    storage = MemoryStorage()
    later = record("20261122T101500Z-F", start_time=T0 + timedelta(days=1), stop_time=T0 + timedelta(days=1))
    dump = record("20261121T110000Z-D", kind="logical", start_time=T0 + timedelta(minutes=45))
    for rec in (later, dump, record()):
        catalog.commit(storage, rec, CODEC)
    assert [r.id for r in catalog.list_backups(storage, "main", KEYS)] == [
        "20261121T101500Z-F",
        "20261121T110000Z-D",
        "20261122T101500Z-F",
    ]
    assert [r.id for r in catalog.list_backups(storage, "main", KEYS, kind="logical")] == ["20261121T110000Z-D"]


def test_unreadable_entry_is_named_unless_skipped() -> None:
    storage = MemoryStorage()
    catalog.commit(storage, record(), CODEC)
    other = EncryptionKey.from_secret(bytes(32))
    with pytest.raises(IntegrityError):
        catalog.list_backups(storage, "main", {other.id: other})
    assert catalog.list_backups(storage, "main", {other.id: other}, skip_unreadable=True) == []


def test_leftovers_of_the_same_kind_older_than_the_lock_are_cleaned() -> None:
    storage = MemoryStorage()
    catalog.commit(storage, record(), CODEC)
    envelope.put_object(
        storage, layout.backup_object("main", rec_id := "20261121T120000Z-F", "base.tar"), [b"y"], CODEC
    )
    envelope.put_object(storage, layout.backup_object("main", "20261121T120000Z-D", "globals.sql"), [b"z"], CODEC)
    leftovers = catalog.find_leftovers(storage, "main", kind="physical")
    assert [lo.backup_id for lo in leftovers] == [rec_id]
    assert catalog.id_taken(storage, "main", rec_id)
    assert not catalog.id_taken(storage, "main", "20261121T130000Z-F")
    # written after the lock was taken: a live run's objects, kept
    assert catalog.clean_leftovers(storage, "main", kind="physical", older_than=time.time() - 3600) == []
    removed = catalog.clean_leftovers(storage, "main", kind="physical", older_than=time.time() + 1)
    assert [lo.backup_id for lo in removed] == [rec_id]
    assert not catalog.id_taken(storage, "main", rec_id)
    # the committed backup and the dump's leftover are untouched
    assert catalog.list_backups(storage, "main", KEYS)[0].id == "20261121T101500Z-F"
    assert [lo.backup_id for lo in catalog.find_leftovers(storage, "main")] == ["20261121T120000Z-D"]
