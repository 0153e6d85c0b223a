"""Recovery targets: what an operator asks `opsdb restore` for, parsed strictly, and which backup serves it.

Times must carry an offset or 'Z': during an incident nobody should restore to the wrong hour because the
shell's or the server's time zone was guessed. Everything here is pure (no I/O).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from opsdb.errors import UsageError
from opsdb.model.lsn import Lsn

KINDS = ("time", "lsn", "xid", "name", "latest", "immediate")
ACTIONS = ("promote", "pause", "shutdown")

_XID_RE = re.compile(r"^\d{1,20}$")
_TIMELINE_RE = re.compile(r"^(?:\d+|0[xX][0-9A-Fa-f]+)$")


def parse_time(text: str) -> datetime:
    """ISO-8601 with an offset or Z -> an aware datetime. Naive times are refused with a hint."""
    raw = text.strip()
    candidate = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        raise UsageError(
            f"invalid time {text!r}: expected ISO-8601 such as 2026-11-21T10:15:00+01:00 or 2026-11-21T09:15:00Z"
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise UsageError(
            f"time {text!r} has no UTC offset",
            hint=f"say which zone you mean, e.g. {raw}Z for UTC or {raw}+01:00; opsdb never guesses the zone",
        )
    return value


def format_time(value: datetime) -> str:
    """UTC, ISO-8601 with 'Z' (what plans and JSON show)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_timeline(text: str | int | None) -> str | int:
    """'latest' (default), 'current', or a timeline number (decimal or 0x hex) -> 'latest'|'current'|int."""
    if text is None:
        return "latest"
    if isinstance(text, int):
        value = text
    else:
        raw = text.strip().lower()
        if raw in ("latest", "current"):
            return raw
        if not _TIMELINE_RE.match(raw):
            raise UsageError(f"invalid timeline {text!r}: use latest, current or a timeline number")
        value = int(raw, 0)
    if value < 1:
        raise UsageError(f"invalid timeline {text!r}: timelines start at 1")
    return value


@dataclasses.dataclass(frozen=True)
class RecoveryTarget:
    """One recovery target. kind: time | lsn | xid | name | latest | immediate."""

    kind: str = "latest"
    time: datetime | None = None
    lsn: Lsn | None = None
    xid: int | None = None
    name: str | None = None
    timeline: str | int = "latest"
    action: str = "promote"

    @classmethod
    def from_options(
        cls,
        *,
        to_time: str | None = None,
        to_lsn: str | None = None,
        to_xid: str | int | None = None,
        to_name: str | None = None,
        latest: bool = False,
        immediate: bool = False,
        timeline: str | int | None = None,
        action: str | None = None,
    ) -> RecoveryTarget:
        """Build from CLI options; at most one target may be given (PostgreSQL refuses more than one too)."""
        given = [
            flag
            for flag, value in (
                ("--to-time", to_time),
                ("--to-lsn", to_lsn),
                ("--to-xid", to_xid),
                ("--to-name", to_name),
                ("--latest", latest or None),
                ("--immediate", immediate or None),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise UsageError(f"give one recovery target, not {len(given)}: {', '.join(given)}")
        act = (action or "promote").strip().lower()
        if act not in ACTIONS:
            raise UsageError(f"invalid target action {action!r}: use promote, pause or shutdown")
        tli = parse_timeline(timeline)
        if to_time is not None:
            return cls("time", time=parse_time(to_time), timeline=tli, action=act)
        if to_lsn is not None:
            return cls("lsn", lsn=Lsn.parse(to_lsn), timeline=tli, action=act)
        if to_xid is not None:
            text = str(to_xid).strip()
            if not _XID_RE.match(text) or int(text) < 3:
                raise UsageError(f"invalid transaction id {to_xid!r}: expected a number >= 3")
            return cls("xid", xid=int(text), timeline=tli, action=act)
        if to_name is not None:
            if not to_name or len(to_name) > 63:
                raise UsageError("invalid restore point name: 1 to 63 characters")
            return cls("name", name=to_name, timeline=tli, action=act)
        if immediate:
            return cls("immediate", timeline=tli, action=act)
        return cls("latest", timeline=tli, action=act)

    def describe(self) -> str:
        """One unambiguous line: times in UTC."""
        describers: dict[str, Callable[[], str]] = {
            "time": lambda: f"time {format_time(self.time)}" if self.time else "time",
            "lsn": lambda: f"LSN {self.lsn}",
            "xid": lambda: f"transaction {self.xid}",
            "name": lambda: f"restore point {self.name!r}",
            "latest": lambda: "the end of the archived WAL",
            "immediate": lambda: "the end of the backup (earliest consistent point)",
        }
        what = describers[self.kind]()
        return f"{what}, timeline {self.timeline}, then {self.action}"

    def label(self) -> str:
        """Compact and unambiguous: 'latest', 'immediate', 'time=2026-11-21T09:15:00Z', 'lsn=0/3000060' ..."""
        value = self.to_json()["value"]
        return self.kind if value is None else f"{self.kind}={value}"

    def to_json(self) -> dict[str, Any]:
        value: Any = None
        if self.kind == "time" and self.time is not None:
            value = format_time(self.time)
        elif self.kind == "lsn":
            value = str(self.lsn)
        elif self.kind == "xid":
            value = str(self.xid)
        elif self.kind == "name":
            value = self.name
        return {"kind": self.kind, "value": value, "timeline": self.timeline, "action": self.action}

    def recovery_settings(self) -> dict[str, str]:
        """The recovery_target_* GUCs for this target (PostgreSQL allows at most one target GUC)."""
        settings: dict[str, str] = {}
        if self.kind == "time" and self.time is not None:
            # a numeric offset: recovery_target_time rejects most zone abbreviations
            settings["recovery_target_time"] = self.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        elif self.kind == "lsn":
            settings["recovery_target_lsn"] = str(self.lsn)
        elif self.kind == "xid":
            settings["recovery_target_xid"] = str(self.xid)
        elif self.kind == "name" and self.name is not None:
            settings["recovery_target_name"] = self.name
        elif self.kind == "immediate":
            settings["recovery_target"] = "immediate"
        if self.kind in ("time", "lsn", "xid", "name"):
            # stop just before the first transaction past the target, so "halfway between two commits"
            # gives exactly the earlier rows (inclusive only matters for exact hits)
            settings["recovery_target_inclusive"] = "on"
        settings["recovery_target_timeline"] = str(self.timeline)
        if self.kind != "latest":
            settings["recovery_target_action"] = self.action
        return settings


class BackupLike(Protocol):
    """What choose_backup needs from a catalog record (model.catalog.BackupRecord fits)."""

    id: str
    kind: str
    status: str


def as_lsn(value: Lsn | str | None) -> Lsn | None:
    if value is None or isinstance(value, Lsn):
        return value
    return Lsn.parse(value)


def as_time(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # catalog times are written in UTC
        return value
    return parse_time(value)


def physical_complete(backups: Iterable[Any]) -> list[Any]:
    """Complete physical backups (full and incremental), oldest first (by stop LSN, then stop time)."""
    usable = [
        b
        for b in backups
        if getattr(b, "kind", "physical") in ("physical", "incremental")
        and getattr(b, "status", "complete") == "complete"
        and as_lsn(getattr(b, "stop_lsn", None)) is not None
    ]
    return sorted(usable, key=lambda b: (as_lsn(b.stop_lsn), as_time(getattr(b, "stop_time", None)) or datetime.min))


def choose_backup(target: RecoveryTarget, backups: Sequence[Any]) -> Any:
    """The newest complete physical backup that ends before the target.

    For xid and name targets the position is unknown without reading WAL, so the oldest backup is used:
    it reaches any later point (pass --backup to start from a newer one). Raises UsageError if none fits.
    """
    usable = physical_complete(backups)
    if not usable:
        raise UsageError("no complete physical backup in the repository", hint="run `opsdb backup` first")
    if target.kind == "time" and target.time is not None:
        fits = [b for b in usable if (as_time(getattr(b, "stop_time", None)) or target.time) < target.time]
        if not fits:
            oldest = as_time(getattr(usable[0], "stop_time", None))
            when = format_time(oldest) if oldest else "unknown"
            raise UsageError(
                f"no backup ends before {format_time(target.time)}: the oldest backup ends at {when}",
                hint="choose a later --to-time, or --immediate for the end of the oldest backup",
            )
        return fits[-1]
    if target.kind == "lsn" and target.lsn is not None:
        goal = target.lsn
        fits = [b for b in usable if (stop := as_lsn(b.stop_lsn)) is not None and stop <= goal]
        if not fits:
            raise UsageError(
                f"no backup ends before LSN {target.lsn}: the oldest backup ends at {as_lsn(usable[0].stop_lsn)}"
            )
        return fits[-1]
    if target.kind in ("xid", "name"):
        return usable[0]
    return usable[-1]
