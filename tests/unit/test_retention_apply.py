"""retention apply on MemoryStorage: deletes in the right order, dry-run changes nothing, a killed run
leaves a consistent catalog and the rerun completes, Object Lock is reported instead of failing."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from opsdb.errors import LockHeld, RepositoryUnavailable
from opsdb.model.lsn import Lsn, segment_name
from opsdb.model.retention import RetentionPolicy
from opsdb.ops import retention
from opsdb.repo import layout
from opsdb.storage.base import DryRunStorage
from opsdb.storage.memory import MemoryStorage

C = "main"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SEG = 16 * 1024 * 1024


def record(n: int, kind: str = "physical") -> dict:
    start = NOW - timedelta(days=10 - n, hours=10)
    return {
        "id": f"{kind[0]}{n:02d}",
        "kind": kind,
        "status": "complete",
        "start_time": start.isoformat(),
        "stop_time": (start + timedelta(minutes=30)).isoformat(),
        "start_lsn": str(Lsn((10 * n + 2) * SEG + 40)),
        "timeline": 1,
    }


def populate(storage: MemoryStorage, days: int = 10) -> list[dict]:
    records = [record(n) for n in range(days)] + [record(n, "logical") for n in range(days)]
    for r in records:
        storage.put(layout.catalog_entry(C, r["id"]), [json.dumps(r).encode()])
        for name in ("base.tar", "backup_manifest", "pg_wal.tar"):
            storage.put(layout.backup_object(C, r["id"], name), [b"x" * 10])
    for n in range(0, 10 * days + 5):
        storage.put(layout.wal_object(C, segment_name(1, n)), [b"w"])
    storage.put(layout.wal_object(C, "00000002.history"), [b"1\t0/5000000\tno recovery target specified\n"])
    return records


def snapshot(storage: MemoryStorage) -> dict[str, bytes]:
    return {i.key: storage.open(i.key).read() for i in storage.list("")}


POLICY = RetentionPolicy(keep_last=3, dumps_keep_last=2, min_age=timedelta(hours=1))


def catalog_ids(storage) -> set[str]:
    return {i.key.rsplit("/", 1)[-1].removesuffix(".json") for i in storage.list(layout.catalog_prefix(C))}


def consistent(storage) -> None:
    """Every backup in the catalog has all its objects; no object of a backup outlives its catalog entry
    unless a deleting marker says a deletion is under way."""
    ids = catalog_ids(storage)
    markers = {i.key.rsplit("/", 1)[-1].removesuffix(".json") for i in storage.list(layout.deleting_prefix(C))}
    for backup_id in ids:
        names = {i.key.rsplit("/", 1)[-1] for i in storage.list(layout.backup_prefix(C, backup_id))}
        assert names == {"base.tar", "backup_manifest", "pg_wal.tar"}, backup_id
    with_objects = {i.key.split("/")[3] for i in storage.list(layout.cluster_prefix(C) + "backups/")}
    assert with_objects - ids <= markers


def test_apply_deletes_expired_backups_dumps_and_wal():
    storage = MemoryStorage()
    records = populate(storage)
    result = retention.apply(storage, C, POLICY, records, now=NOW)
    assert result.deleted_backups == [f"p{n:02d}" for n in range(7)]
    assert result.deleted_dumps == [f"l{n:02d}" for n in range(8)]
    assert catalog_ids(storage) == {"p07", "p08", "p09", "l08", "l09"}
    consistent(storage)
    assert list(storage.list(layout.deleting_prefix(C))) == []
    wal_left = sorted(i.key.rsplit("/", 1)[-1] for i in storage.list(layout.wal_prefix(C)))
    # p07 starts in segment 72: everything before it goes, the history file stays
    assert wal_left[0] == segment_name(1, 72) and "00000002.history" in wal_left
    assert result.wal_files_deleted == 72
    assert result.objects_deleted == 15 * 3
    doc = result.to_dict()
    assert doc["summary"]["backups_deleted"] == 7 and doc["wal"][0]["files"] == 72


def test_dry_run_changes_nothing_and_reports_the_same():
    storage = MemoryStorage()
    records = populate(storage)
    before = snapshot(storage)
    dry = DryRunStorage(storage)
    preview = retention.apply(dry, C, POLICY, records, now=NOW, dry_run=True)
    assert snapshot(storage) == before
    assert layout.catalog_entry(C, "p00") in dry.deletes and layout.deleting_marker(C, "p00") in dry.writes
    real = retention.apply(storage, C, POLICY, records, now=NOW)
    assert preview.deleted_backups == real.deleted_backups
    assert preview.deleted_dumps == real.deleted_dumps
    assert preview.wal_files_deleted == real.wal_files_deleted
    assert [w.to_dict() for w in preview.wal] == [w.to_dict() for w in real.wal]


class FailingStorage(MemoryStorage):
    """Fails (as an unreachable repository would) once `budget` keys have been deleted."""

    def __init__(self, inner: MemoryStorage, budget: int) -> None:
        super().__init__()
        self._objects = inner._objects
        self.budget = budget

    def delete(self, keys) -> None:
        for key in list(keys):
            if self.budget <= 0:
                raise RepositoryUnavailable("unable to delete: connection reset")
            self.budget -= 1
            super().delete([key])


@pytest.mark.parametrize("budget", [0, 1, 2, 3, 5, 17, 40, 60, 90])
def test_killed_run_leaves_a_consistent_catalog_and_the_rerun_completes(budget):
    reference = MemoryStorage()
    records = populate(reference)
    retention.apply(reference, C, POLICY, records, now=NOW)

    storage = MemoryStorage()
    populate(storage)
    with pytest.raises(RepositoryUnavailable):
        retention.apply(FailingStorage(storage, budget), C, POLICY, records, now=NOW)
    consistent(storage)
    # the rerun reads the catalog again (what is left of it) and finishes the marked deletion first
    left = [r for r in records if r["id"] in catalog_ids(storage)]
    rerun = retention.apply(storage, C, POLICY, left, now=NOW)
    consistent(storage)
    assert sorted(snapshot(storage)) == sorted(snapshot(reference))
    assert len(rerun.resumed) <= 1


def test_lock_is_held_and_a_held_lock_changes_nothing():
    storage = MemoryStorage()
    records = populate(storage)
    before = snapshot(storage)
    held = []

    @contextlib.contextmanager
    def busy():
        raise LockHeld("unable to lock cluster main: a backup is running (pid 4242)")
        yield

    with pytest.raises(LockHeld):
        retention.apply(storage, C, POLICY, records, now=NOW, lock=busy)
    assert snapshot(storage) == before

    @contextlib.contextmanager
    def free():
        held.append("in")
        yield
        held.append("out")

    retention.apply(storage, C, POLICY, records, now=NOW, lock=free, list_records=lambda: records)
    assert held == ["in", "out"]


def test_object_lock_reports_instead_of_failing():
    storage = MemoryStorage()
    records = populate(storage)
    now = datetime.now(UTC).replace(microsecond=0)
    shifted = []
    for r in records:  # same shape as above, relative to the real clock (objects were just written)
        start = datetime.fromisoformat(r["start_time"]) - NOW + now
        shifted.append({**r, "start_time": start.isoformat(), "stop_time": (start + timedelta(minutes=30)).isoformat()})
    before = snapshot(storage)
    result = retention.apply(storage, C, POLICY, shifted, now=now, object_lock_days=30)
    assert snapshot(storage) == before
    assert result.deleted_backups == [] and result.wal_files_deleted == 0
    kinds = {x.kind for x in result.locked}
    assert kinds == {"backup", "dump", "wal"}
    assert all(now + timedelta(days=29) < x.until <= now + timedelta(days=30, seconds=5) for x in result.locked)
    later = now + timedelta(days=31)
    result = retention.apply(storage, C, POLICY, shifted, now=later, object_lock_days=30)
    assert result.locked == [] and len(result.deleted_backups) == 7


def test_policy_from_config():
    from opsdb.config import RetentionConfig

    cfg = RetentionConfig(keep_last=7, window="14d", daily=7, min_age="2h", dumps_keep_last=3)
    policy = retention.policy_from_config(cfg)
    assert policy == RetentionPolicy(
        keep_last=7, window=timedelta(days=14), daily=7, min_age=timedelta(hours=2), dumps_keep_last=3
    )
