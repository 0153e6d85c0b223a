"""Drill report model and renderers: JSON round trip, SPEC summary shape, self-contained HTML."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from opsdb.errors import UsageError
from opsdb.model.report import (
    SCHEMA_VERSION,
    BackupRef,
    Check,
    DrillReport,
    HistoryRow,
    Interval,
    RecoveryPoint,
    TimelinePicture,
    WalRange,
    history_stats,
)
from opsdb.render.report import duration, render_history_text, render_html, render_markdown

T0 = datetime(2026, 11, 21, 9, 0, 0, tzinfo=UTC)


def sample_report(*, passed: bool = True, picture: bool = True) -> DrillReport:
    backups = [
        BackupRef(
            "20261121T090000Z", T0, T0 + timedelta(seconds=40), "0/2000028", "0/2000100", 1, 30_000_000, 9_000_000
        ),
        BackupRef(
            "20261121T093000Z", T0 + timedelta(minutes=30), T0 + timedelta(minutes=31), "0/9000028", "0/9000100", 1
        ),
    ]
    target = T0 + timedelta(minutes=45, seconds=10)
    reached = T0 + timedelta(minutes=45, seconds=3)
    checks = [
        Check("pg_verifybackup", "pass", "backup_manifest: 1012 files verified"),
        Check("target reached and promoted", "pass", "promoted on timeline 2"),
        Check("recovery point", "pass" if passed else "fail", "newest heartbeat 09:45:03 <= target; none later"),
        Check("pg_amcheck", "pass", "3 databases, heap and btree: no corruption"),
    ]
    return DrillReport(
        id="drill-20261121T095000Z",
        cluster="main",
        result="pass" if passed else "fail",
        started_at=T0 + timedelta(minutes=50),
        finished_at=T0 + timedelta(minutes=51, seconds=12),
        target_kind="time",
        target_time=target,
        recovered_time=reached,
        rpo_seconds=7.0,
        rto_seconds=71.5,
        phases={"plan": 0.4, "fetch_extract": 30.1, "wal_replay": 25.0, "checks": 16.0},
        checks=checks,
        bytes_read=123_456_789,
        backup=backups[1],
        wal=WalRange(1, "000000010000000000000009", "00000001000000000000000C", 4),
        recovery_point=RecoveryPoint(reached, reached + timedelta(milliseconds=3), "0/C000F28", 2),
        picture=TimelinePicture(
            backups=backups if picture else [],
            wal=[
                Interval(T0, T0 + timedelta(minutes=20)),
                Interval(T0 + timedelta(minutes=20), T0 + timedelta(minutes=22), "gap", "00000001000000000000000[5-6]"),
                Interval(T0 + timedelta(minutes=30), T0 + timedelta(minutes=48)),
            ]
            if picture
            else [],
            window_start=T0 + timedelta(seconds=40) if picture else None,
            window_end=T0 + timedelta(minutes=48) if picture else None,
        ),
        environment={"opsdb_version": "0.1.0", "provider": "local", "postgresql": "15.8"},
    )


def test_summary_is_exactly_the_spec_shape() -> None:
    summary = sample_report().summary()
    assert list(summary) == [
        "id",
        "result",
        "target_time",
        "recovered_time",
        "rpo_seconds",
        "rto_seconds",
        "phases",
        "checks",
    ]
    assert summary["target_time"] == "2026-11-21T09:45:10.000Z"
    assert summary["checks"][0] == {
        "name": "pg_verifybackup",
        "status": "pass",
        "detail": "backup_manifest: 1012 files verified",
    }
    assert set(summary["phases"]) == {"plan", "fetch_extract", "wal_replay", "checks"}


def test_json_round_trip_keeps_everything() -> None:
    report = sample_report()
    text = report.to_json()
    doc = json.loads(text)
    assert doc["schema_version"] == SCHEMA_VERSION
    back = DrillReport.from_json(text)
    assert back == report
    assert back.to_json() == text


def test_newer_schema_is_refused_with_a_hint() -> None:
    doc = sample_report().to_dict()
    doc["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(UsageError, match="schema_version"):
        DrillReport.from_dict(doc)


def test_malformed_report_is_one_clear_error() -> None:
    with pytest.raises(UsageError, match="not JSON"):
        DrillReport.from_json("{")
    with pytest.raises(UsageError, match="malformed"):
        DrillReport.from_dict({"schema_version": 1, "id": "x"})


def test_html_is_self_contained_and_holds_the_picture() -> None:
    html = render_html(sample_report())
    assert html.count("<svg") == 2  # timeline + phases
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html.lower()
    assert "@import" not in html and "url(http" not in html
    assert "@media print" in html
    # the picture names what an auditor looks for
    for text in ("target 09:45:10.000", "reached 09:45:03.000", "recoverable window", "gap", "(restored)"):
        assert text in html, text


def test_html_escapes_untrusted_text() -> None:
    report = sample_report()
    bad = Check("user assertion <b>", "fail", "<script>alert(1)</script>")
    report = DrillReport(**{**report.__dict__, "checks": [*report.checks, bad], "result": "fail"})
    html = render_html(report)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "FAIL" in html


def test_html_without_timeline_data_still_renders() -> None:
    report = sample_report(picture=False)
    report = DrillReport(**{**report.__dict__, "target_time": None, "recovered_time": None, "phases": {}})
    html = render_html(report)
    assert "No timeline data" in html and "No phase timings" in html


def test_markdown_names_failed_checks_first() -> None:
    md = render_markdown(sample_report(passed=False))
    assert md.startswith("# Restore drill drill-20261121T095000Z: FAIL")
    assert "**FAIL: failed: replay stopped at 09:45:03, 7.00 s before the target; recovery point: newest " in md
    assert "| recovery point | **FAIL** |" in md
    assert "| **RTO** | **71.500** | |" in md


def test_history_view_and_stats() -> None:
    rows = [HistoryRow.of(sample_report()), HistoryRow.of(sample_report(passed=False))]
    stats = history_stats(rows)
    assert stats["drills"] == 2 and stats["passed"] == 1
    assert stats["rto_seconds"]["median"] == 71.5
    text = render_history_text(rows, stats)
    assert "1/2 passed" in text and "recovery point" in text
    assert render_history_text([], history_stats([])).startswith("no drill reports")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4213, "0.42 s"), (12.34, "12.3 s"), (245, "4 min 05 s"), (7500, "2 h 05 min"), (None, "n/a")],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text
