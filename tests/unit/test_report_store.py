"""Reports kept in the repository: create-only, listed newest first, encrypted like everything else."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from opsdb.errors import Conflict, IntegrityError, NotFound, UsageError
from opsdb.model.report import DrillReport
from opsdb.repo import layout
from opsdb.repo.envelope import Codec
from opsdb.repo.reports import load_rendered, load_report, recent_reports, report_ids, store_report
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.crypto import EncryptionKey, key_id_of
from tests.unit.test_report import sample_report

SECRET = os.urandom(32)
KEY = EncryptionKey(key_id_of(SECRET), SECRET)
CODEC = Codec(key=KEY, require_encryption=True)


def _later(report: DrillReport, minutes: int) -> DrillReport:
    started = report.started_at + timedelta(minutes=minutes)
    return DrillReport(**{**report.__dict__, "id": f"drill-{minutes:04d}", "started_at": started})


def test_store_list_load_round_trip() -> None:
    storage = MemoryStorage()
    report = sample_report()
    keys = store_report(storage, "main", report, {"md": b"# md", "html": b"<html>"}, CODEC)
    assert keys == [layout.report_object("main", report.id, ext) for ext in ("json", "md", "html")]
    assert load_report(storage, "main", report.id, {KEY.id: KEY}) == report
    assert load_rendered(storage, "main", report.id, "html", {KEY.id: KEY}) == b"<html>"
    # stored encrypted: the plaintext is not in the object
    raw = storage.open(keys[1]).read()
    assert b"# md" not in raw


def test_a_report_is_never_replaced() -> None:
    storage = MemoryStorage()
    store_report(storage, "main", sample_report(), {}, CODEC)
    with pytest.raises(Conflict):
        store_report(storage, "main", sample_report(passed=False), {}, CODEC)


def test_recent_reports_newest_first_and_limited() -> None:
    storage = MemoryStorage()
    base = sample_report()
    for minutes in (1, 3, 2):
        store_report(storage, "main", _later(base, minutes), {"md": b"x"}, CODEC)
    assert report_ids(storage, "main") == ["drill-0001", "drill-0002", "drill-0003"]
    recent = recent_reports(storage, "main", {KEY.id: KEY}, limit=2)
    assert [r.id for r in recent] == ["drill-0003", "drill-0002"]
    assert recent_reports(storage, "other", {KEY.id: KEY}) == []


def test_missing_and_bad_requests() -> None:
    storage = MemoryStorage()
    with pytest.raises(NotFound, match="no drill report .drill-nope."):
        load_report(storage, "main", "drill-nope", {})
    with pytest.raises(UsageError, match="unknown report format"):
        load_rendered(storage, "main", "x", "pdf", {})
    with pytest.raises(UsageError, match="invalid report id"):
        load_rendered(storage, "main", "../x", "json", {})


def test_tampered_report_is_refused() -> None:
    storage = MemoryStorage()
    report = sample_report()
    store_report(storage, "main", report, {}, Codec())
    key = layout.report_object("main", report.id, "json")
    data = bytearray(storage.open(key).read())
    data[-60] ^= 1
    storage.put(key, [bytes(data)])
    with pytest.raises(IntegrityError, match=report.id):
        load_report(storage, "main", report.id, {})
