"""Restore planning (no PostgreSQL needed) and the catalog renderers."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsdb.errors import NotFound, UsageError
from opsdb.model.catalog import BackupRecord, DumpDatabase, StoredFile, Tablespace
from opsdb.model.lsn import Lsn
from opsdb.ops.recovery.restore_plan import RestoreRequest, parse_tablespace_map, plan_restore
from opsdb.render.catalog import backup_details, backups_table, restore_plan_text, summary_line
from opsdb.repo import catalog
from opsdb.repo.envelope import Codec
from opsdb.storage.memory import MemoryStorage

T0 = datetime(2026, 11, 21, 10, 15, tzinfo=UTC)
CODEC = Codec("none", 0)


def physical(backup_id: str = "20261121T101500Z-F", **kw: object) -> BackupRecord:
    base = dict(
        id=backup_id,
        cluster="main",
        kind="physical",
        start_time=T0,
        stop_time=T0 + timedelta(seconds=10),
        size_bytes=3000,
        stored_bytes=300,
        compression="zstd",
        encrypted=False,
        timeline=1,
        start_lsn=Lsn.parse("0/4000028"),
        stop_lsn=Lsn.parse("0/4000100"),
        objects=(
            StoredFile("base.tar", 2000, 200, "a" * 64, "base"),
            StoredFile("pg_tblspc-16385.tar", 1000, 100, "b" * 64, "tablespace"),
        ),
        tablespaces=(Tablespace(16385, "extra", "/srv/extra"),),
    )
    base.update(kw)
    return BackupRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def storage() -> MemoryStorage:
    s = MemoryStorage()
    catalog.commit(s, physical(), CODEC)
    catalog.commit(s, physical("20261122T101500Z-F", start_time=T0 + timedelta(days=1)), CODEC)
    dump = physical(
        "20261122T111500Z-D", kind="logical", tablespaces=(), databases=(DumpDatabase("app", "pg_dump/app.dump"),)
    )
    catalog.commit(s, dump, CODEC)
    return s


def test_plan_picks_the_latest_physical_and_maps_tablespaces(storage: MemoryStorage, tmp_path: Path) -> None:
    request = RestoreRequest(
        "main", tmp_path / "data", tablespace_map=parse_tablespace_map(["/srv/extra/=" + str(tmp_path / "ts")])
    )
    plan = plan_restore(request, storage=storage, keys={})
    assert plan.backup.id == "20261122T101500Z-F"
    assert [(s.object, s.dest) for s in plan.steps] == [
        ("base.tar", str(tmp_path / "data")),
        ("pg_tblspc-16385.tar", str(tmp_path / "ts")),
    ]
    assert plan.bytes_to_read == 300 and plan.bytes_to_write == 3000
    assert plan.recovery_settings == {
        "restore_command": "false",
        "recovery_target_timeline": "current",
        "archive_mode": "off",
    }
    assert plan.signal_file == "recovery.signal" and plan.target == "immediate"
    text = restore_plan_text(plan)
    assert "extract   pg_tblspc-16385.tar" in text and "recovery.signal" in text
    assert "archive   off: the restored copy does not archive" in text and plan.to_dict()["archive_mode"] == "off"
    assert not (tmp_path / "data").exists()  # planning writes nothing

    keep = plan_restore(dataclasses.replace(request, archive_mode="keep"), storage=storage, keys={})
    assert "archive_mode" not in keep.recovery_settings and keep.to_dict()["archive_mode"] == "keep"
    for wrong in (
        dataclasses.replace(request, archive_mode="on"),
        dataclasses.replace(request, archive_mode="off", standby=True),
    ):
        with pytest.raises(UsageError):
            plan_restore(wrong, storage=storage, keys={})


def test_plan_refusals(storage: MemoryStorage, tmp_path: Path) -> None:
    ts = ("extra", str(tmp_path / "ts"))
    with pytest.raises(NotFound):
        plan_restore(
            RestoreRequest("main", tmp_path / "d", backup_id="20200101T000000Z-F", tablespace_map=(ts,)),
            storage=storage,
            keys={},
        )
    with pytest.raises(UsageError, match="restore-dump"):
        plan_restore(RestoreRequest("main", tmp_path / "d", backup_id="20261122T111500Z-D"), storage=storage, keys={})
    with pytest.raises(UsageError, match="--port"):
        plan_restore(RestoreRequest("main", tmp_path / "d", start=True, tablespace_map=(ts,)), storage=storage, keys={})
    with pytest.raises(UsageError, match="inside the target"):
        plan_restore(
            RestoreRequest("main", tmp_path / "d", tablespace_map=(("16385", str(tmp_path / "d" / "x")),)),
            storage=storage,
            keys={},
        )
    with pytest.raises(UsageError, match="absolute"):
        plan_restore(
            RestoreRequest("main", tmp_path / "d", tablespace_map=(("extra", "rel/dir"),)), storage=storage, keys={}
        )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        plan_restore(RestoreRequest("main", tmp_path / "full", tablespace_map=(ts,)), storage=storage, keys={})
    with pytest.raises(UsageError, match="OLD=NEW"):
        parse_tablespace_map(["nonsense"])


def test_renderers() -> None:
    rec = physical()
    table = backups_table([rec])
    assert table.splitlines()[0].startswith("ID") and "20261121T101500Z-F" in table and "0/4000100" in table
    assert backups_table([]) == "no complete backups or dumps in the repository"
    details = backup_details(rec)
    assert "tablespace    extra (oid 16385) at /srv/extra" in details and "pg_tblspc-16385.tar" in details
    line = summary_line("backup", rec, 2.0)
    assert (
        line.startswith("backup 20261121T101500Z-F complete: ")
        and "(10.0%)" in line
        and line.endswith("2.0 s, 1.5 KiB/s")
    )
