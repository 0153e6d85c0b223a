"""Incremental backups without PostgreSQL: ids and records, the parent choice and refusals, chains in
restore plans, retention and verify (MemoryStorage, real envelopes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsdb.errors import IntegrityError, UsageError
from opsdb.model import retention
from opsdb.model.catalog import BackupRecord, StoredFile, kind_of_id, new_backup_id, parse_backup_id
from opsdb.model.chain import broken_links, chain_of, chains
from opsdb.model.lsn import Lsn
from opsdb.ops.backup.incremental import check_server_supports, choose_parent, parent_manifest
from opsdb.ops.backup.source import ServerFacts
from opsdb.ops.proof.verify import verify_repository
from opsdb.ops.recovery.restore_plan import RestoreRequest, plan_restore
from opsdb.render.catalog import backup_details, backups_table, restore_plan_text
from opsdb.repo import catalog, envelope, layout
from opsdb.repo.envelope import Codec
from opsdb.storage.memory import MemoryStorage

T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # a Monday
CODEC = Codec("none", 0)
SYSID = "7400000000000000001"


def facts(version_num: int = 180001, summarize_wal: bool | None = True) -> ServerFacts:
    return ServerFacts("host=db", f"{version_num // 10000}.1", version_num, SYSID, False, (), summarize_wal)


def record(day: int, parent: str | None = None, **kw: object) -> BackupRecord:
    start = T0 + timedelta(days=day)
    kind = "incremental" if parent else "physical"
    base = dict(
        id=new_backup_id(start, kind),
        cluster="main",
        kind=kind,
        start_time=start,
        stop_time=start + timedelta(seconds=30),
        size_bytes=1000 if parent else 9000,
        stored_bytes=100,
        compression="none",
        encrypted=False,
        timeline=1,
        system_identifier=SYSID,
        pg_version_num=180001,
        start_lsn=Lsn.parse(f"0/{day + 2:X}000028"),
        stop_lsn=Lsn.parse(f"0/{day + 2:X}000100"),
        parent=parent,
    )
    base.update(kw)
    return BackupRecord(**base)  # type: ignore[arg-type]


def store(storage: MemoryStorage, rec: BackupRecord) -> BackupRecord:
    """Commit a record whose objects (base.tar, backup_manifest) really exist, at their stored sizes."""
    objects = []
    for name, data in (
        ("base.tar", b"tar of " + rec.id.encode()),
        ("backup_manifest", b'{"PostgreSQL-Backup-Manifest-Version": 2}'),
    ):
        obj = envelope.put_object(storage, layout.backup_object("main", rec.id, name), [data], CODEC)
        objects.append(
            StoredFile(
                name, obj.size, obj.stored_size, obj.sha256, "base" if name == "base.tar" else "manifest", obj.digest_of
            )
        )
    done = BackupRecord(**{**rec.__dict__, "objects": tuple(objects)})
    catalog.commit(storage, done, CODEC)
    return done


@pytest.fixture
def chain() -> tuple[MemoryStorage, list[BackupRecord]]:
    storage = MemoryStorage()
    full = store(storage, record(0))
    inc1 = store(storage, record(1, full.id))
    inc2 = store(storage, record(2, inc1.id))
    return storage, [full, inc1, inc2]


def test_ids_records_and_rendering() -> None:
    inc = record(1, "20261116T010000Z-F")
    assert inc.id == "20261117T010000Z-I" and kind_of_id(inc.id) == "incremental"
    assert parse_backup_id(inc.id)[1] == "incremental"
    assert inc.is_physical and inc.is_incremental and not record(0).is_incremental
    assert inc.to_json()["parent"] == "20261116T010000Z-F" and record(0).to_json()["parent"] is None
    assert BackupRecord.from_dict(inc.to_dict()) == inc
    assert "20261116T010000Z-F" in backups_table([record(0), inc]).splitlines()[2]
    assert "parent        20261116T010000Z-F" in backup_details(inc)


def test_refusals_name_the_reason() -> None:
    with pytest.raises(UsageError, match="PostgreSQL 17 or later; this server is PostgreSQL 15.1"):
        check_server_supports(facts(150001, None))
    with pytest.raises(UsageError, match="PostgreSQL 17 or later; this server is PostgreSQL 16.1"):
        check_server_supports(facts(160001, None))
    with pytest.raises(UsageError, match="summarize_wal = on"):
        check_server_supports(facts(180001, False))
    check_server_supports(facts(170001, True))


def test_parent_is_the_newest_backup_or_from(chain: tuple[MemoryStorage, list[BackupRecord]]) -> None:
    storage, (full, inc1, inc2) = chain
    assert choose_parent(storage, "main", {}, facts(), None).id == inc2.id
    assert choose_parent(storage, "main", {}, facts(), full.id).id == full.id
    with pytest.raises(UsageError, match="no backup '20990101T000000Z-F'"):
        choose_parent(storage, "main", {}, facts(), "20990101T000000Z-F")
    other = ServerFacts("host=db", "18.1", 180001, "999", False, (), True)
    with pytest.raises(UsageError, match="no complete backup"):
        choose_parent(storage, "main", {}, other, None)
    with pytest.raises(UsageError, match="another server"):
        choose_parent(storage, "main", {}, other, full.id)
    with pytest.raises(UsageError, match="no complete backup"):
        choose_parent(MemoryStorage(), "main", {}, facts(), None)
    with parent_manifest(storage, "main", inc1, {}) as path:
        assert path.read_bytes().startswith(b'{"PostgreSQL-Backup-Manifest-Version"')
    assert not path.exists()


def test_restore_plan_resolves_the_chain(chain: tuple[MemoryStorage, list[BackupRecord]], tmp_path: Path) -> None:
    storage, (full, inc1, inc2) = chain
    plan = plan_restore(RestoreRequest("main", tmp_path / "data"), storage=storage, keys={})
    assert plan.backup.id == inc2.id and plan.chain == (full.id, inc1.id, inc2.id)
    assert [s.backup_id for s in plan.steps] == [full.id, inc1.id, inc2.id]
    assert plan.staging_bytes == sum(s.size for s in plan.steps) and plan.to_dict()["chain"] == list(plan.chain)
    assert plan.bytes_to_read == sum(s.stored_size for s in plan.steps)
    text = restore_plan_text(plan)
    assert f"{full.id} -> {inc1.id} -> {inc2.id}" in text and "staging" in text
    assert not (tmp_path / "data").exists()
    # a full backup restores without a chain
    assert (
        plan_restore(RestoreRequest("main", tmp_path / "d2", backup_id=full.id), storage=storage, keys={}).chain == ()
    )


def test_missing_or_damaged_member_is_named(chain: tuple[MemoryStorage, list[BackupRecord]], tmp_path: Path) -> None:
    storage, (full, inc1, inc2) = chain
    storage.delete([layout.backup_object("main", full.id, "base.tar")])
    with pytest.raises(IntegrityError, match=f"chain member {full.id} is damaged \\(base.tar is missing\\)"):
        plan_restore(RestoreRequest("main", tmp_path / "data"), storage=storage, keys={})
    storage.delete([layout.catalog_entry("main", inc1.id)])
    with pytest.raises(IntegrityError, match=f"chain member {inc1.id} \\(parent of {inc2.id}\\) is missing"):
        plan_restore(RestoreRequest("main", tmp_path / "data"), storage=storage, keys={})
    assert not (tmp_path / "data").exists()


def test_chain_helpers() -> None:
    full, inc1 = record(0), record(1, record(0).id)
    inc2 = record(2, inc1.id)
    assert [r.id for r in chain_of([full, inc1, inc2], inc2.id)] == [full.id, inc1.id, inc2.id]
    assert chain_of([full, inc1, inc2], full.id) == [full]
    assert broken_links([full, inc2]) == [(inc2.id, inc1.id)] and broken_links([full, inc1, inc2]) == []
    assert chains([full, inc1, inc2, record(5)]) == [(full.id, [inc1.id, inc2.id])]
    assert chains([full, inc2]) == [(inc1.id, [inc2.id])]  # broken: under the missing parent


def test_verify_names_a_broken_chain(chain: tuple[MemoryStorage, list[BackupRecord]]) -> None:
    storage, (full, inc1, inc2) = chain
    backups = catalog.list_backups(storage, "main", {})
    assert verify_repository(storage, "main", {}, backups).backups == 3
    one = verify_repository(storage, "main", {}, backups, backup_id=inc2.id)
    assert one.backups == 3  # the whole chain
    storage.delete([layout.catalog_entry("main", inc1.id)])
    result = verify_repository(storage, "main", {}, catalog.list_backups(storage, "main", {}))
    assert any(f"its parent {inc1.id} is not in the catalog" in p.what for p in result.problems)


def test_retention_keeps_every_parent_of_a_kept_backup_and_says_why() -> None:
    # week 1: full + 6 incrementals; week 2: full + 2 incrementals
    week1 = [record(0)]
    for day in range(1, 7):
        week1.append(record(day, week1[-1].id))
    week2 = [record(7)]
    for day in (8, 9):
        week2.append(record(day, week2[-1].id))
    now = week2[-1].stop_time + timedelta(hours=3)
    policy = retention.RetentionPolicy(keep_last=2, min_age=timedelta(0))
    result = retention.plan(policy, week1 + week2, now=now)
    kept = {d.id: d.rules for d in result.backups if d.keep}
    assert set(kept) == {r.id for r in week2}  # the 2 newest restore points and the full they build on
    assert kept[week2[0].id] == (f"parent_of {week2[1].id} (keep_last, parent_of {week2[2].id} (newest, keep_last))",)
    assert set(result.backups_to_delete) == {r.id for r in week1}
    # a weekly GFS rule keeping week 1's newest incremental keeps its whole chain
    gfs = retention.plan(retention.RetentionPolicy(weekly=2, min_age=timedelta(0)), week1 + week2, now=now)
    assert gfs.backups_to_delete == []
    assert any(r.startswith("parent_of") for d in gfs.backups if d.id == week1[0].id for r in d.rules)
    # a window reaching into the middle of week 2 keeps that chain from its full backup on
    window = retention.plan(
        retention.RetentionPolicy(window=timedelta(days=1), min_age=timedelta(0)), week1 + week2, now=now
    )
    assert set(window.backups_to_delete) == {r.id for r in week1}
