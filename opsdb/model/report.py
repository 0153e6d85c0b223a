"""The drill report: the versioned JSON document that is the source of truth of a restore drill.

Markdown and HTML are renderings of it (opsdb/render/report.py); `drill --json` prints its summary
(SPEC: id, result, target_time, recovered_time, rpo_seconds, rto_seconds, phases, checks).
docs/report-schema.md describes every field; bump SCHEMA_VERSION when a field changes meaning.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from opsdb.errors import UsageError

SCHEMA_VERSION = 1

PASS = "pass"
FAIL = "fail"

# The restore phases, in order. Their sum is the measured RTO.
PHASE_PLAN = "plan"
PHASE_FETCH = "fetch_extract"
PHASE_REPLAY = "wal_replay"
PHASE_CHECKS = "checks"
PHASES = (PHASE_PLAN, PHASE_FETCH, PHASE_REPLAY, PHASE_CHECKS)
PHASE_LABELS = {
    PHASE_PLAN: "plan",
    PHASE_FETCH: "fetch + extract",
    PHASE_REPLAY: "WAL replay",
    PHASE_CHECKS: "checks",
}


def format_time(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, to the millisecond (what every report field uses)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("report times must be timezone-aware")
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"time without offset in report: {text!r}")
    return value


def _required_time(text: str) -> datetime:
    value = parse_time(text)
    if value is None:
        raise ValueError("a WAL interval in the report has no start or end time")
    return value


@dataclasses.dataclass(frozen=True)
class Check:
    """One proof step: name, pass/fail, and a detail line a human can act on."""

    name: str
    status: str  # "pass" | "fail"
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclasses.dataclass(frozen=True)
class BackupRef:
    """The backup a drill restored (a copy of the catalog fields that matter for the report)."""

    id: str
    start_time: datetime | None = None
    stop_time: datetime | None = None
    start_lsn: str | None = None
    stop_lsn: str | None = None
    timeline: int | None = None
    size_bytes: int | None = None
    stored_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class WalRange:
    """The archived WAL a drill needed: from the backup's start segment to the segment of the point reached."""

    timeline: int | None
    first: str | None
    last: str | None
    segments: int = 0


@dataclasses.dataclass(frozen=True)
class Interval:
    """A span on the timeline picture. kind: "wal" (archived and contiguous) or "gap" (missing WAL)."""

    start: datetime
    end: datetime
    kind: str = "wal"
    label: str = ""


@dataclasses.dataclass(frozen=True)
class TimelinePicture:
    """What the HTML timeline draws: backups, WAL coverage, the recoverable window, target, point reached."""

    backups: list[BackupRef] = dataclasses.field(default_factory=list)
    wal: list[Interval] = dataclasses.field(default_factory=list)
    window_start: datetime | None = None
    window_end: datetime | None = None


@dataclasses.dataclass(frozen=True)
class RecoveryPoint:
    """What the scratch server actually reached."""

    heartbeat_time: datetime | None = None  # newest heartbeat row present after recovery
    replay_time: datetime | None = None  # pg_last_xact_replay_timestamp()
    lsn: str | None = None  # pg_last_wal_replay_lsn() before promotion / insert LSN after
    timeline: int | None = None  # after promotion


@dataclasses.dataclass(frozen=True)
class DrillReport:
    id: str
    cluster: str
    result: str  # "pass" | "fail"
    started_at: datetime
    finished_at: datetime
    target_kind: str  # "time" | "random" | "latest"
    target_time: datetime | None
    recovered_time: datetime | None
    rpo_seconds: float | None
    rto_seconds: float | None
    phases: dict[str, float]
    checks: list[Check]
    bytes_read: int = 0
    backup: BackupRef | None = None
    wal: WalRange | None = None
    recovery_point: RecoveryPoint = RecoveryPoint()
    picture: TimelinePicture = TimelinePicture()
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None  # what ended the drill early, if anything
    schema_version: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return self.result == PASS

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    # --- JSON -----------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The `drill --json` shape (SPEC), without report_files (the CLI adds them)."""
        return {
            "id": self.id,
            "result": self.result,
            "target_time": format_time(self.target_time),
            "recovered_time": format_time(self.recovered_time),
            "rpo_seconds": _round(self.rpo_seconds),
            "rto_seconds": _round(self.rto_seconds),
            "phases": {name: _round(secs) for name, secs in self.phases.items()},
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schema_version": self.schema_version}
        doc.update(self.summary())
        doc.update(
            {
                "cluster": self.cluster,
                "started_at": format_time(self.started_at),
                "finished_at": format_time(self.finished_at),
                "target_kind": self.target_kind,
                "bytes_read": self.bytes_read,
                "backup": _backup_dict(self.backup) if self.backup else None,
                "wal": dataclasses.asdict(self.wal) if self.wal else None,
                "recovery_point": {
                    "heartbeat_time": format_time(self.recovery_point.heartbeat_time),
                    "replay_time": format_time(self.recovery_point.replay_time),
                    "lsn": self.recovery_point.lsn,
                    "timeline": self.recovery_point.timeline,
                },
                "timeline_picture": {
                    "backups": [_backup_dict(b) for b in self.picture.backups],
                    "wal": [
                        {"start": format_time(i.start), "end": format_time(i.end), "kind": i.kind, "label": i.label}
                        for i in self.picture.wal
                    ],
                    "window_start": format_time(self.picture.window_start),
                    "window_end": format_time(self.picture.window_end),
                },
                "environment": self.environment,
                "error": self.error,
            }
        )
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DrillReport:
        version = doc.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise UsageError(
                f"unable to read drill report {doc.get('id')!r}: schema_version {version!r} is not supported "
                f"(this opsdb reads up to {SCHEMA_VERSION})",
                hint="upgrade opsdb to read reports written by a newer version",
            )
        try:
            return _from_dict(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"unable to read drill report {doc.get('id')!r}: malformed field ({exc})") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> DrillReport:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"unable to read drill report: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise UsageError("unable to read drill report: not a JSON object")
        return cls.from_dict(doc)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _backup_dict(b: BackupRef) -> dict[str, Any]:
    doc = dataclasses.asdict(b)
    doc["start_time"] = format_time(b.start_time)
    doc["stop_time"] = format_time(b.stop_time)
    return doc


def _backup_from(doc: dict[str, Any] | None) -> BackupRef | None:
    if doc is None:
        return None
    fields = dict(doc)
    fields["start_time"] = parse_time(fields.get("start_time"))
    fields["stop_time"] = parse_time(fields.get("stop_time"))
    known = {f.name for f in dataclasses.fields(BackupRef)}
    return BackupRef(**{k: v for k, v in fields.items() if k in known})


def _from_dict(doc: dict[str, Any]) -> DrillReport:
    point = doc.get("recovery_point") or {}
    pic = doc.get("timeline_picture") or {}
    wal = doc.get("wal")
    started = parse_time(doc["started_at"])
    finished = parse_time(doc["finished_at"])
    assert started is not None and finished is not None
    return DrillReport(
        schema_version=doc["schema_version"],
        id=doc["id"],
        cluster=doc["cluster"],
        result=doc["result"],
        started_at=started,
        finished_at=finished,
        target_kind=doc.get("target_kind", "time"),
        target_time=parse_time(doc.get("target_time")),
        recovered_time=parse_time(doc.get("recovered_time")),
        rpo_seconds=doc.get("rpo_seconds"),
        rto_seconds=doc.get("rto_seconds"),
        phases={str(k): float(v) for k, v in (doc.get("phases") or {}).items()},
        checks=[Check(c["name"], c["status"], c.get("detail", "")) for c in doc.get("checks") or []],
        bytes_read=int(doc.get("bytes_read") or 0),
        backup=_backup_from(doc.get("backup")),
        wal=WalRange(**wal) if wal else None,
        recovery_point=RecoveryPoint(
            heartbeat_time=parse_time(point.get("heartbeat_time")),
            replay_time=parse_time(point.get("replay_time")),
            lsn=point.get("lsn"),
            timeline=point.get("timeline"),
        ),
        picture=TimelinePicture(
            backups=[b for b in (_backup_from(x) for x in pic.get("backups") or []) if b is not None],
            wal=[
                Interval(_required_time(i["start"]), _required_time(i["end"]), i.get("kind", "wal"), i.get("label", ""))
                for i in pic.get("wal") or []
            ],
            window_start=parse_time(pic.get("window_start")),
            window_end=parse_time(pic.get("window_end")),
        ),
        environment=dict(doc.get("environment") or {}),
        error=doc.get("error"),
    )


def new_report_id(started_at: datetime) -> str:
    """Sortable and unique enough for one cluster: drill-20261121T101500Z."""
    return "drill-" + started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclasses.dataclass(frozen=True)
class HistoryRow:
    """One line of `report list`: enough to see the RTO/RPO trend."""

    id: str
    started_at: datetime
    result: str
    target_kind: str
    backup_id: str | None
    rpo_seconds: float | None
    rto_seconds: float | None
    failed: list[str]

    @classmethod
    def of(cls, report: DrillReport) -> HistoryRow:
        return cls(
            id=report.id,
            started_at=report.started_at,
            result=report.result,
            target_kind=report.target_kind,
            backup_id=report.backup.id if report.backup else None,
            rpo_seconds=report.rpo_seconds,
            rto_seconds=report.rto_seconds,
            failed=[c.name for c in report.failed_checks],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": format_time(self.started_at),
            "result": self.result,
            "target_kind": self.target_kind,
            "backup_id": self.backup_id,
            "rpo_seconds": _round(self.rpo_seconds),
            "rto_seconds": _round(self.rto_seconds),
            "failed_checks": self.failed,
        }


def history_stats(rows: list[HistoryRow]) -> dict[str, Any]:
    """Pass rate and RTO/RPO spread over the given drills (for the history view)."""
    rtos = sorted(r.rto_seconds for r in rows if r.rto_seconds is not None)
    rpos = sorted(r.rpo_seconds for r in rows if r.rpo_seconds is not None)

    def spread(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"min": None, "median": None, "max": None}
        mid = len(values) // 2
        median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
        return {"min": _round(values[0]), "median": _round(median), "max": _round(values[-1])}

    passed = sum(1 for r in rows if r.result == PASS)
    return {"drills": len(rows), "passed": passed, "rto_seconds": spread(rtos), "rpo_seconds": spread(rpos)}
