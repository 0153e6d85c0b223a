"""retention apply on MemoryStorage with real catalog records (repo.catalog.commit): deletes in the right
order, dry-run changes nothing, a killed run leaves a consistent catalog and the rerun completes, Object
Lock is reported instead of failing, and the backup and dump locks (repo/lock.py) exclude backups."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from opsdb.errors import IntegrityError, LockHeld, OperationFailed, RepositoryUnavailable
from opsdb.model.catalog import BackupRecord, new_backup_id
from opsdb.model.lsn import Lsn, segment_name
from opsdb.model.retention import RetentionPolicy
from opsdb.ops.retention import apply as retention
from opsdb.repo import catalog, layout
from opsdb.repo.envelope import Codec
from opsdb.repo.lock import RepositoryLock
from opsdb.storage.base import DryRunStorage
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.crypto import EncryptionKey, key_id_of

C = "main"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SEG = 16 * 1024 * 1024
SECRET = bytes(range(32))
KEY = EncryptionKey(key_id_of(SECRET), SECRET)
KEYS = {KEY.id: KEY}
CODEC = Codec("zstd", 1, key=KEY, require_encryption=True)
OBJECTS = {"base.tar", "backup_manifest", "pg_wal.tar", catalog.MANIFEST_NAME}


def record(n: int, kind: str = "physical", now: datetime = NOW) -> BackupRecord:
    start = now - timedelta(days=10 - n, hours=10 if kind == "physical" else 9)
    return BackupRecord(
        id=new_backup_id(start, kind),
        cluster=C,
        kind=kind,
        start_time=start,
        stop_time=start + timedelta(minutes=30),
        size_bytes=30,
        stored_bytes=30,
        compression="zstd",
        encrypted=True,
        key_id=KEY.id,
        timeline=1 if kind == "physical" else None,
        start_lsn=Lsn((10 * n + 2) * SEG + 40) if kind == "physical" else None,
    )


def P(n: int) -> str:  # reads like the ids it names
    return record(n).id


def L(n: int) -> str:
    return record(n, "logical").id


def populate(storage: MemoryStorage, days: int = 10, now: datetime = NOW) -> list[BackupRecord]:
    records = [record(n, now=now) for n in range(days)] + [record(n, "logical", now) for n in range(days)]
    for r in records:
        for name in ("base.tar", "backup_manifest", "pg_wal.tar"):
            storage.put(layout.backup_object(C, r.id, name), [b"x" * 10])
        catalog.commit(storage, r, CODEC)  # manifest, then the catalog entry: what `opsdb backup` writes
    for n in range(0, 10 * days + 5):
        storage.put(layout.wal_object(C, segment_name(1, n)), [b"w"])
    storage.put(layout.wal_object(C, "00000002.history"), [b"1\t0/5000000\tno recovery target specified\n"])
    return records


def snapshot(storage: MemoryStorage) -> dict[str, bytes]:
    return {i.key: storage.open(i.key).read() for i in storage.list("")}


POLICY = RetentionPolicy(keep_last=3, dumps_keep_last=2, min_age=timedelta(hours=1))


def catalog_ids(storage) -> set[str]:
    return catalog.committed_ids(storage, C)


def consistent(storage) -> None:
    """Every backup in the catalog has all its objects and reads back; no object of a backup outlives its
    catalog entry unless a deleting marker says a deletion is under way; no lock is left behind."""
    ids = catalog_ids(storage)
    markers = {i.key.rsplit("/", 1)[-1].removesuffix(".json") for i in storage.list(layout.deleting_prefix(C))}
    for backup_id in ids:
        names = {i.key.rsplit("/", 1)[-1] for i in storage.list(layout.backup_prefix(C, backup_id))}
        assert names == OBJECTS, backup_id
    assert {r.id for r in catalog.list_backups(storage, C, KEYS)} == ids
    with_objects = {i.key.split("/")[3] for i in storage.list(layout.cluster_prefix(C) + "backups/")}
    assert with_objects - ids <= markers
    assert list(storage.list(layout.locks_prefix(C))) == []


def test_apply_deletes_expired_backups_dumps_and_wal():
    storage = MemoryStorage()
    populate(storage)
    result = retention.apply(storage, C, POLICY, KEYS, now=NOW)
    assert result.deleted_backups == [P(n) for n in range(7)]
    assert result.deleted_dumps == [L(n) for n in range(8)]
    assert catalog_ids(storage) == {P(7), P(8), P(9), L(8), L(9)}
    consistent(storage)
    assert list(storage.list(layout.deleting_prefix(C))) == []
    wal_left = sorted(i.key.rsplit("/", 1)[-1] for i in storage.list(layout.wal_prefix(C)))
    # P(7) starts in segment 72: everything before it goes, the history file stays
    assert wal_left[0] == segment_name(1, 72) and "00000002.history" in wal_left
    assert result.wal_files_deleted == 72
    assert result.objects_deleted == 15 * len(OBJECTS)
    doc = result.to_dict()
    assert doc["summary"]["backups_deleted"] == 7 and doc["wal"][0]["files"] == 72


def test_each_expiry_is_a_phase_log_record(caplog):
    """What retention deletes is in the log (the command's own output may go nowhere under cron)."""
    storage = MemoryStorage()
    populate(storage)
    with caplog.at_level("INFO", logger="opsdb"):
        retention.apply(storage, C, POLICY, KEYS, now=NOW)
    phases = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("command") == "retention"]
    assert (
        phases[0]["phase"] == "plan" and phases[0]["expired"] == 15 and phases[0]["wal_files"] == 105 + 1
    )  # + history
    expired = [(p["phase"], p["id"]) for p in phases if p["phase"] in ("expire backup", "expire dump")]
    assert expired == [("expire backup", P(n)) for n in range(7)] + [("expire dump", L(n)) for n in range(8)]
    assert all(p["rules"] == "expired" for p in phases if p["phase"] == "expire backup")
    wal = [p for p in phases if p["phase"] == "expire wal"]
    assert [(w["first"], w["last"], w["files"]) for w in wal] == [(segment_name(1, 0), segment_name(1, 71), 72)]


def test_dry_run_changes_nothing_and_reports_the_same():
    storage = MemoryStorage()
    populate(storage)
    before = snapshot(storage)
    dry = DryRunStorage(storage)
    preview = retention.apply(dry, C, POLICY, KEYS, now=NOW, dry_run=True)
    assert snapshot(storage) == before
    assert layout.catalog_entry(C, P(0)) in dry.deletes and layout.deleting_marker(C, P(0)) in dry.writes
    assert not any(key.startswith(layout.locks_prefix(C)) for key in dry.writes)  # a preview takes no lock
    retention.apply(storage, C, POLICY, KEYS, now=NOW, dry_run=True)  # a plain storage is wrapped
    assert snapshot(storage) == before
    real = retention.apply(storage, C, POLICY, KEYS, now=NOW)
    assert preview.deleted_backups == real.deleted_backups
    assert preview.deleted_dumps == real.deleted_dumps
    assert preview.wal_files_deleted == real.wal_files_deleted
    assert [w.to_dict() for w in preview.wal] == [w.to_dict() for w in real.wal]


class FailingStorage(MemoryStorage):
    """Fails (as an unreachable repository would) once `budget` keys have been deleted.

    Lock objects are exempt: a run killed for real leaves its lock, which the next run takes over once
    its process is gone (tests/unit/test_lock.py); here the rerun is the same process."""

    def __init__(self, inner: MemoryStorage, budget: int) -> None:
        super().__init__()
        self._objects = inner._objects
        self.budget = budget

    def delete(self, keys) -> None:
        for key in list(keys):
            if not key.startswith(layout.locks_prefix(C)):
                if self.budget <= 0:
                    raise RepositoryUnavailable("unable to delete: connection reset")
                self.budget -= 1
            super().delete([key])


@pytest.mark.parametrize("budget", [0, 1, 2, 3, 5, 17, 40, 60, 89, 90, 120])
def test_killed_run_leaves_a_consistent_catalog_and_the_rerun_completes(budget):
    reference = MemoryStorage()
    populate(reference)
    retention.apply(reference, C, POLICY, KEYS, now=NOW)

    storage = MemoryStorage()
    populate(storage)
    with pytest.raises(RepositoryUnavailable):
        retention.apply(FailingStorage(storage, budget), C, POLICY, KEYS, now=NOW)
    consistent(storage)
    # the rerun finishes the marked deletion first, then reads what is left of the catalog
    rerun = retention.apply(storage, C, POLICY, KEYS, now=NOW)
    consistent(storage)
    assert sorted(snapshot(storage)) == sorted(snapshot(reference))
    assert len(rerun.resumed) <= 1


class WatchingStorage(MemoryStorage):
    """Records, at every delete of a backup object or WAL file, which lock objects exist."""

    def __init__(self) -> None:
        super().__init__()
        self.locks_seen: set[frozenset[str]] = set()

    def delete(self, keys) -> None:
        keys = list(keys)
        if not all(k.startswith(layout.locks_prefix(C)) for k in keys):
            self.locks_seen.add(frozenset(i.key for i in self.list(layout.locks_prefix(C))))
        super().delete(keys)


def test_backup_and_dump_locks_are_held_while_deleting():
    storage = WatchingStorage()
    populate(storage)
    retention.apply(storage, C, POLICY, KEYS, now=NOW)
    assert storage.locks_seen == {frozenset({layout.lock_object(C, "backup"), layout.lock_object(C, "dump")})}
    assert list(storage.list(layout.locks_prefix(C))) == []  # released


@pytest.mark.parametrize("kind", ["backup", "dump"])
def test_a_running_backup_or_dump_makes_retention_refuse_and_change_nothing(kind):
    storage = MemoryStorage()
    populate(storage)
    running = RepositoryLock(storage, C, kind, command=kind, host="db9", pid=4242, heartbeat_interval=0)
    running.acquire()
    before = snapshot(storage)
    with pytest.raises(LockHeld) as err:
        retention.apply(storage, C, POLICY, KEYS, now=NOW)
    assert f"unable to apply retention to cluster {C}: {kind} of cluster {C} is already running on host db9" in str(
        err.value
    )
    assert snapshot(storage) == before  # not even the other lock stays behind
    running.release()
    assert len(retention.apply(storage, C, POLICY, KEYS, now=NOW).deleted_backups) == 7


def test_a_backup_cannot_start_while_retention_holds_the_lock():
    storage = MemoryStorage()
    populate(storage)
    with retention.cluster_locks(storage, C):
        for kind in ("backup", "dump"):
            with pytest.raises(LockHeld, match="held by retention"):
                RepositoryLock(storage, C, kind, command=kind, host="db9", heartbeat_interval=0).acquire()
    RepositoryLock(storage, C, "backup", host="db9", heartbeat_interval=0).acquire()


class TakenOverStorage(MemoryStorage):
    """After the first backup deletion, another run takes over the backup lock (as after failed heartbeats)."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = False

    def delete(self, keys) -> None:
        keys = list(keys)
        super().delete(keys)
        if not self.taken and any(k.startswith(layout.deleting_prefix(C)) for k in keys):
            self.taken = True
            thief = {"owner": "other", "host": "db9", "pid": 1, "command": "backup", "expires": "2999-01-01T00:00:00Z"}
            self.put(layout.lock_object(C, "backup"), [json.dumps(thief).encode()])
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not self._lost():
                time.sleep(0.02)

    @staticmethod
    def _lost() -> bool:
        """The backup lock's heartbeat thread ends when it finds the lock is no longer its own."""
        return not any(t.name == "opsdb-lock-backup" for t in threading.enumerate())


def test_a_run_whose_lock_was_taken_over_stops_deleting():
    storage = TakenOverStorage()
    populate(storage)
    with pytest.raises(OperationFailed, match="backup lock was lost"):
        retention.apply(storage, C, POLICY, KEYS, now=NOW, lock_ttl=timedelta(seconds=0.3))
    assert storage.taken
    assert len(catalog_ids(storage)) == 20 - 1  # one deletion finished, then it stopped
    assert list(storage.list(layout.deleting_prefix(C))) == []
    holder = json.loads(storage.open(layout.lock_object(C, "backup")).read())
    assert holder["owner"] == "other"  # the other run's lock is left alone


def test_object_lock_reports_instead_of_failing():
    storage = MemoryStorage()
    now = datetime.now(UTC).replace(microsecond=0)
    populate(storage, now=now)  # same shape as above, relative to the real clock (objects were just written)
    before = snapshot(storage)
    result = retention.apply(storage, C, POLICY, KEYS, now=now, object_lock_days=30)
    assert snapshot(storage) == before
    assert result.deleted_backups == [] and result.wal_files_deleted == 0
    kinds = {x.kind for x in result.locked}
    assert kinds == {"backup", "dump", "wal"}
    assert all(now + timedelta(days=29) < x.until <= now + timedelta(days=30, seconds=5) for x in result.locked)
    later = now + timedelta(days=31)
    result = retention.apply(storage, C, POLICY, KEYS, now=later, object_lock_days=30)
    assert result.locked == [] and len(result.deleted_backups) == 7


def test_unreadable_catalog_entry_refuses_before_deleting_anything():
    storage = MemoryStorage()
    populate(storage)
    other = EncryptionKey(key_id_of(bytes(32)), bytes(32))
    before = snapshot(storage)
    with pytest.raises(IntegrityError, match=r"catalog/.*-F\.json is encrypted with key"):
        retention.apply(storage, C, POLICY, {other.id: other}, now=NOW)
    assert snapshot(storage) == before


def test_policy_from_config():
    from opsdb.config import RetentionConfig

    cfg = RetentionConfig(keep_last=7, window="14d", daily=7, min_age="2h", dumps_keep_last=3)
    policy = retention.policy_from_config(cfg)
    assert policy == RetentionPolicy(
        keep_last=7, window=timedelta(days=14), daily=7, min_age=timedelta(hours=2), dumps_keep_last=3
    )
