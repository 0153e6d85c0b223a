"""docs/repository-format.md describes every key of repo/layout.py (docs as code)."""

from __future__ import annotations

import inspect
from pathlib import Path

from opsdb.model.catalog import BackupRecord, Tablespace
from opsdb.repo import layout

DOC = (Path(__file__).resolve().parents[2] / "docs" / "repository-format.md").read_text()


def test_every_layout_name_is_documented() -> None:
    names = [n for n, v in vars(layout).items() if not n.startswith("_") and (inspect.isfunction(v) or n.isupper())]
    assert len(names) >= 15
    missing = [n for n in names if f"`{n}" not in DOC]
    assert missing == [], f"docs/repository-format.md does not describe {missing}"


def test_documented_key_patterns_match_the_code() -> None:
    c, i = "<cluster>", "<id>"
    for key in (
        layout.catalog_entry(c, i),
        layout.backup_object(c, i, "base.tar"),
        layout.backup_object(c, i, Tablespace(1, "t", "/x").object_name.replace("1", "<oid>")),
        layout.backup_object(c, i, layout.BACKUP_MANIFEST_OBJECT),
        layout.deleting_marker(c, i),
        layout.lock_object(c, "<kind>"),
        layout.lock_takeover_marker(c, "<kind>", "<generation>"),
        layout.REPO_MARKER,
    ):
        rest = key.split(f"clusters/{c}/", 1)[-1]
        assert rest in DOC, f"{rest} not in docs/repository-format.md"
    assert layout.wal_object(c, "000000010000000A000000FF").endswith("wal/000000010000000A/000000010000000A000000FF")
    assert "wal/000000010000000A/000000010000000A000000FF" in DOC


def test_every_catalog_field_is_documented() -> None:
    import dataclasses
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    record = BackupRecord("x", "c", "physical", now, now, 0, 0, "zstd", False)
    missing = [f for f in record.to_dict() if f"`{f}`" not in DOC]
    assert missing == [], f"catalog fields not in docs/repository-format.md: {missing}"
    assert {f.name for f in dataclasses.fields(BackupRecord)} >= set(record.to_json())
