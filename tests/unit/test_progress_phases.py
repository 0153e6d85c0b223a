"""Progress totals and phase lines without a server: verify's bytes out of its total, the WAL a recovering
server has replayed out of the WAL it will replay, the terminal bars (rich on an in-memory terminal), and
the phase records operations log (a log search reads what verify proved)."""

from __future__ import annotations

import io
import logging

import pytest

from opsdb.cli.output import ByteProgress, _rich_columns
from opsdb.model.lsn import Lsn, segment_name
from opsdb.ops.proof.verify import verify_repository
from opsdb.ops.recovery import pitr_wait
from opsdb.ops.recovery.replay_progress import (
    ReplaySpan,
    planned_end,
    reporter,
    segment_end,
    segment_start,
    span_of_restore,
)
from opsdb.repo import layout
from tests.unit.test_verify import KEYS, build_repo, flip_byte


class Meter:
    """A progress callback as the CLI hands one: counts bytes and takes a total."""

    def __init__(self) -> None:
        self.done, self.total, self.calls = 0, None, 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.calls += 1

    def set_total(self, total: int) -> None:
        assert self.done == 0, "the total comes before the first byte"
        self.total = total


def _phases(caplog: pytest.LogCaptureFixture, operation: str) -> list[dict]:
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("command") == operation]


def test_verify_counts_stored_bytes_up_to_its_announced_total(caplog: pytest.LogCaptureFixture) -> None:
    storage, record = build_repo()
    meter = Meter()
    with caplog.at_level(logging.INFO, logger="opsdb"):
        result = verify_repository(storage, "main", KEYS, [record], on_bytes=meter)
    assert result.ok, result.problems
    stored = sum(i.size for i in storage.list(layout.cluster_prefix("main")) if not i.key.endswith("marker.json"))
    assert meter.total == meter.done == stored  # every object read once, to its end: 100 % exactly
    assert result.stored_bytes <= meter.done and meter.calls >= result.objects
    phases = _phases(caplog, "verify")
    assert [p["phase"] for p in phases[:2]] == ["scan", "read"]
    assert phases[1]["stored_bytes"] == stored and phases[1]["objects"] == result.objects
    backup = next(p for p in phases if p["phase"] == "backup checked")
    assert backup["backup_id"] == record.id and backup["problems"] == 0
    wal = [p for p in phases if p["phase"] == "wal checked"]
    assert [(w["first"], w["last"], w["segments"], w["problems"]) for w in wal] == [
        (segment_name(1, 2), segment_name(1, 5), 4, 0)
    ]


def test_verify_phase_lines_name_the_bad_backup_and_wal_range(caplog: pytest.LogCaptureFixture) -> None:
    storage, record = build_repo()
    flip_byte(storage, layout.backup_object("main", record.id, "base.tar"))
    flip_byte(storage, layout.wal_object("main", segment_name(1, 3)))
    with caplog.at_level(logging.INFO, logger="opsdb"):
        result = verify_repository(storage, "main", KEYS, [record], backup_id=record.id)
    assert not result.ok
    phases = {p["phase"]: p for p in _phases(caplog, "verify")}
    bad_backup = [p for p in result.problems if p.key.startswith(layout.backup_prefix("main", record.id))]
    assert phases["backup checked"]["problems"] == len(bad_backup) >= 1  # the tar, and its files unseen
    assert phases["wal checked"]["problems"] == 1


def test_the_replay_span_of_a_plan() -> None:
    class Backup:
        start_lsn, stop_lsn = "0/2000028", "0/3000100"

    latest = {"reaches": {"lsn": "0/6000060"}, "wal": {"last": "000000010000000000000006"}}
    assert planned_end(latest) == Lsn.parse("0/6000060")  # exact when the plan knows it
    by_time = {"reaches": {"lsn": None}, "wal": {"last": "000000020000000000000006"}, "window": {"to_lsn": "0/9"}}
    assert planned_end(by_time) == Lsn.parse("0/7000000")  # else the end of the last segment needed
    assert planned_end({"window": {"to_lsn": "0/5000000"}}) == Lsn.parse("0/5000000")
    span = span_of_restore(Backup(), latest)
    assert span == ReplaySpan(Lsn.parse("0/2000028"), Lsn.parse("0/6000060"))
    assert span.total == 0x4000038 and span.done(Lsn.parse("0/1000000")) == 0
    assert span_of_restore(Backup(), None) == ReplaySpan(Lsn.parse("0/2000028"), Lsn.parse("0/3000100"))
    assert ReplaySpan(Lsn(10), None).total is None and ReplaySpan(Lsn(10), Lsn(5)).total is None
    assert segment_start("0000000100000001000000FF") == Lsn.parse("1/FF000000")
    assert segment_end("0000000100000001000000FF") == Lsn.parse("2/0") and segment_start("00000002.history") is None


def test_replay_positions_never_go_back() -> None:
    seen: list[tuple[int, int | None]] = []
    at = reporter(ReplaySpan(Lsn(1000), Lsn(5000)), lambda done, total: seen.append((done, total)))
    assert at is not None
    for value in (1500, 3000, 2000, 5000):  # SQL, then an older segment start from the log
        at(Lsn(value))
    assert seen == [(0, 4000), (500, 4000), (2000, 4000), (2000, 4000), (4000, 4000)]  # 0 at once: replay starts
    assert reporter(None, lambda d, t: None) is None and reporter(ReplaySpan(Lsn(1), None), None) is None


def test_waiting_for_the_target_reports_the_replay_position_by_sql_then_by_the_log() -> None:
    """Three polls in recovery (LSN by SQL), then the login fails and the log's restored segment is the
    position, then the server promotes."""
    polls = iter(["0/3000000", "0/4000000", "0/5000000"])
    state = {"sql": True, "promoted": False}
    positions: list[Lsn] = []

    def query(sql: str) -> object:
        if not state["sql"]:
            raise RuntimeError("FATAL: password authentication failed")
        if sql == "SELECT pg_is_in_recovery()":
            return not state["promoted"]
        if sql == "SELECT pg_get_wal_replay_pause_state()":
            return "not paused"
        if sql == "SELECT pg_last_wal_replay_lsn()::text":
            value = next(polls, None)
            if value is None:
                state["sql"] = False
                raise RuntimeError("FATAL: password authentication failed")
            return value
        return None

    log = {"text": ""}

    def sleep(_: float) -> None:
        if not state["sql"] and "restored" not in log["text"]:
            log["text"] = 'LOG:  restored log file "000000010000000000000007" from archive\n'
        elif "restored" in log["text"]:
            log["text"] += "LOG:  database system is ready to accept connections\n"

    point = pitr_wait.wait_for_target(
        action="promote",
        standby=False,
        query=query,
        is_running=lambda: True,
        read_log=lambda: log["text"],
        timeout=60,
        sleep=sleep,
        on_progress=positions.append,
    )
    assert point.state == "promoted"
    assert positions[:3] == [Lsn.parse("0/3000000"), Lsn.parse("0/4000000"), Lsn.parse("0/5000000")]
    assert Lsn.parse("0/7000000") in positions  # the start of the segment the log says was restored


def test_a_later_stage_gets_its_own_bar_with_percentage_rate_and_eta() -> None:
    from rich.console import Console
    from rich.progress import Progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    meter = ByteProgress(100 * 2**20)
    with Progress(*_rich_columns(), console=console, auto_refresh=False) as bar:
        meter._bar, meter._task = bar, bar.add_task("restore main", total=meter.total, meter=meter)
        meter(100 * 2**20)
        replay = meter.stage("replay WAL main")
        replay(8 * 2**20, 64 * 2**20)
        meter.started -= 10  # ten seconds in: the rates and ETAs are visible
        bar.refresh()
    screen = out.getvalue()
    assert "restore main" in screen and "100%" in screen and "100.0 MiB/100.0 MiB" in screen
    assert "replay WAL main" in screen and "12%" in screen and "8.0 MiB/64.0 MiB" in screen
    assert "ETA" in screen and " MB" not in screen


def test_a_stage_shows_nothing_without_a_terminal() -> None:
    meter = ByteProgress()
    at = meter.stage("replay")
    at(10, 100)  # no bar: nothing happens, nothing fails
    assert meter.done == 0


def test_the_restore_summary_rates_the_writing_as_the_bar_did() -> None:
    """A restore --start that wrote 100 MiB in 10 s and watched replay for 30 s: 10.0 MiB/s, as the bar
    (whose rate stops when the replay bar appears), not 2.5 MiB/s."""
    from opsdb.render.catalog import restore_result_text

    doc = {
        "backup_id": "B",
        "target_dir": "/t",
        "recovery_point": {"lsn": "0/3000000", "time": None},
        "sync": None,
        "replay_seconds": 30.0,
    }
    text = restore_result_text(doc, 40.0, 100 * 2**20)
    assert "100.0 MiB in 40.0 s (replay 30.0 s), 10.0 MiB/s" in text
    plain = restore_result_text({**doc, "recovery_point": None, "replay_seconds": 0.0}, 10.0, 100 * 2**20)
    assert "100.0 MiB in 10.0 s, 10.0 MiB/s" in plain and "replay" not in plain
    meter = ByteProgress()
    meter._bar = type("Bar", (), {"update": lambda *a, **k: None, "add_task": lambda *a, **k: 1})()
    meter(100 * 2**20)
    meter.stage("replay")(1, 10)
    meter.started = meter.stopped - 10  # type: ignore[operator]
    assert round(meter.rate() / 2**20, 1) == 10.0  # frozen when the replay began


def test_a_drills_replay_span_ends_at_the_planned_end_else_after_the_last_segment() -> None:
    from types import SimpleNamespace

    from opsdb.ops.proof.drill import replay_span

    backup = SimpleNamespace(start_lsn="0/2000028")
    latest = SimpleNamespace(backup=backup, planned_end=Lsn.parse("0/5000100"), wal_last="000000010000000000000005")
    assert replay_span(latest, 16 * 2**20) == ReplaySpan(Lsn.parse("0/2000028"), Lsn.parse("0/5000100"))
    by_time = SimpleNamespace(backup=backup, planned_end=None, wal_last="000000010000000000000005")
    assert replay_span(by_time, 16 * 2**20).end == Lsn.parse("0/6000000")  # type: ignore[union-attr]
    assert replay_span(SimpleNamespace(backup=SimpleNamespace(), planned_end=None, wal_last=None), 16) is None


class ListingSpy:
    """A storage that passes everything through and remembers the prefixes listed."""

    def __init__(self, inner: object) -> None:
        self.inner, self.prefixes = inner, []

    def list(self, prefix: str):
        self.prefixes.append(prefix)
        return self.inner.list(prefix)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_verify_of_one_backup_totals_what_it_reads_without_listing_the_whole_repository() -> None:
    inner, record = build_repo()
    storage = ListingSpy(inner)
    meter = Meter()
    result = verify_repository(storage, "main", KEYS, [record], backup_id=record.id, on_bytes=meter)  # type: ignore[arg-type]
    assert result.ok, result.problems
    assert meter.total == meter.done > 0
    assert layout.cluster_prefix("main") not in storage.prefixes
    assert layout.backup_prefix("main", record.id) in storage.prefixes
