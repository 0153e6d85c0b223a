"""Point-in-time recovery: plan (backup, timeline, window and WAL checks), recovery settings, and waiting
for the server to reach the target and reporting the point it actually reached.

restore (ops/recovery/restore.py) restores the backup's files; this module decides whether the target is
reachable before anything is written, and configures and watches the recovery afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opsdb.errors import UsageError
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, Lsn, segment_name
from opsdb.model.target import RecoveryTarget, as_lsn, choose_backup, physical_complete
from opsdb.model.window import (
    BackupWindow,
    RecoveryEnd,
    backup_window,
    ending_at_records,
    on_path,
    timeline_of_segment,
)
from opsdb.ops.recovery.pitr_checks import (
    GapRefused,
    WalGap,
    check_reachable,
    describe_window,
    gap_refusal,
    needs_wal_after,
)
from opsdb.ops.recovery.pitr_checks import fmt as _fmt
from opsdb.ops.recovery.pitr_checks import refuse as _refuse
from opsdb.ops.recovery.pitr_wait import RecoveryPoint, parse_log, start_and_wait, wait_for_target
from opsdb.pg.recovery import RECOVERY_SIGNAL, STANDBY_SIGNAL
from opsdb.repo.wal import ArchiveScan

__all__ = [
    "GapRefused",
    "RecoveryPoint",
    "describe_window",
    "parse_log",
    "start_and_wait",
    "wait_for_target",
]  # re-exported for callers


@dataclasses.dataclass(frozen=True)
class RecoveryPlan:
    backup: Any
    target: RecoveryTarget  # what the server is configured for (the end before the gap when one was accepted)
    timeline: int  # the resolved target timeline
    window: BackupWindow
    wal_first: str | None  # archived WAL the recovery will read (first, last)
    wal_last: str | None
    wal_segments: int
    wal_bytes: int  # stored bytes of those segments
    backup_bytes: int
    gap: WalGap | None = None
    timeline_choice: str | None = None  # why this timeline, when opsdb chose it (ops/recovery/timelines.py)

    @property
    def bytes_to_read(self) -> int:
        return self.wal_bytes + self.backup_bytes

    def window_text(self) -> str:
        return describe_window(self.window)

    def reaches(self) -> dict[str, Any]:
        """The exact point the restore will stop at, as far as the plan can know it."""
        w = self.window
        kind = self.target.kind
        if kind == "immediate":
            return {"lsn": str(w.from_lsn), "time": _fmt(w.from_time), "how": "the end of the backup"}
        if kind == "latest":
            how = "the end of the archived WAL"
            if self.gap is not None:
                how = f"the end of the WAL before the gap at {self.gap.first_missing} (accepted)"
            if w.end_source == "records":
                how += ": its last record and last commit"
            return {"lsn": str(w.to_lsn), "time": _fmt(w.to_time), "how": how}
        if kind == "time":
            return {"lsn": None, "time": _fmt(self.target.time), "how": "the last commit at or before the target"}
        if kind == "lsn":
            return {"lsn": str(self.target.lsn), "time": None, "how": "the first record at or after the target LSN"}
        return {"lsn": None, "time": None, "how": f"the target {self.target.label()} (found while replaying)"}

    def to_json(self) -> dict[str, Any]:
        w = self.window
        return {
            "backup_id": self.backup.id,
            "target": self.target.to_json() | {"timeline": self.timeline},
            "window": {
                "from": _fmt(w.from_time),
                "to": _fmt(w.to_time),
                "from_lsn": str(w.from_lsn),
                "to_lsn": str(w.to_lsn),
                "end_from": w.end_source,
            },
            "reaches": self.reaches(),
            "gap": self.gap.to_json() if self.gap is not None else None,
            "wal": {"first": self.wal_first, "last": self.wal_last, "segments": self.wal_segments},
            "wal_bytes": self.wal_bytes,
            "bytes_to_read": self.bytes_to_read,
            "timeline_choice": self.timeline_choice,
        }


def resolve_timeline(request: str | int, backup_timeline: int, scan: ArchiveScan) -> int:
    """'current' -> the backup's; 'latest' -> as PostgreSQL finds it (probing N+1.history from the backup's
    timeline); a number must have its history file archived (PostgreSQL refuses otherwise)."""
    if request == "current":
        return backup_timeline
    if request == "latest":
        tli = backup_timeline
        for _ in range(len(scan.histories) + 1):  # bounded probe, like PostgreSQL's findNewestTimeLine
            if tli + 1 not in scan.histories:
                break
            tli += 1
        return tli
    tli = int(request)
    if tli != backup_timeline and tli not in scan.histories:
        known = ", ".join(str(t) for t in sorted({1, *scan.histories})) or "1"
        raise UsageError(f"timeline {tli} is not in the archive (no {tli:08X}.history); timelines: {known}")
    return tli


def plan_recovery(
    target: RecoveryTarget,
    backups: Sequence[Any],
    scan: ArchiveScan,
    *,
    backup_id: str | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    accept_gap: bool = False,
    read_end: Callable[[Sequence[str]], RecoveryEnd | None] | None = None,
) -> RecoveryPlan:
    """Pick the backup, resolve the timeline and check the target is reachable with no WAL gap.
    Every refusal is a UsageError (exit 2) that prints the recoverable window; nothing is written.

    read_end (ops/recovery/pitr_reach.py) reads where recovery can really stop in the newest archived WAL;
    without it the window ends at the archive's segment ends and upload times. A target that needs
    WAL beyond a missing segment is refused (GapRefused) unless accept_gap: then the restore is
    planned to the end of the WAL before the gap, and the plan says so."""
    complete = physical_complete(backups)
    if backup_id is not None:
        chosen = [b for b in complete if b.id == backup_id]
        if not chosen:
            raise UsageError(f"no complete physical backup {backup_id!r}", hint="see `opsdb backups list`")
        backup = chosen[0]
    else:
        candidates = complete
        if target.timeline not in ("latest", "current"):
            tli = int(target.timeline)
            if tli not in scan.histories and not any(_tli(b) == tli for b in complete):
                resolve_timeline(tli, 0, scan)  # raises: not in the archive
            history = scan.history(tli)
            candidates = [b for b in complete if on_path(_tli(b), _start(b), tli, history, segment_size)]
            if not candidates:
                raise UsageError(f"no complete backup leads to timeline {tli}")
        elif target.timeline == "latest":
            newest = resolve_timeline("latest", min((_tli(b) for b in complete), default=1), scan)
            history = scan.history(newest)
            on_newest = [b for b in complete if on_path(_tli(b), _start(b), newest, history, segment_size)]
            candidates = on_newest or complete
        backup = choose_backup(target, candidates)
    timeline = resolve_timeline(target.timeline, _tli(backup), scan)
    history = scan.history(timeline)
    window = backup_window(backup, timeline, history, scan.segments, segment_size)
    if window is None:
        raise UsageError(
            f"backup {backup.id} (timeline {_tli(backup)}) does not lead to timeline {timeline}",
            hint="choose another --backup or --timeline",
        )
    if not window.usable:
        raise _refuse(f"the WAL needed to make backup {backup.id} consistent is not archived", window)
    if read_end is not None:
        window = ending_at_records([window], read_end, history, segment_size)[0]
    gap = None
    if window.wal.has_gap and needs_wal_after(target, window):
        gap = WalGap(window.wal.first_missing or "?", window.wal.resumes_at or "?", target.label(), accept_gap)
        if not accept_gap:
            raise gap_refusal(target, window)
        target = RecoveryTarget("latest", timeline=target.timeline)
    check_reachable(target, backup, window)
    last_segno = _last_needed(target, window, segment_size)
    first_segno = window.wal.first_segno
    needed = [(timeline_of_segment(s, timeline, history, segment_size), s) for s in range(first_segno, last_segno + 1)]
    return RecoveryPlan(
        backup=backup,
        target=target,
        timeline=timeline,
        window=window,
        wal_first=segment_name(*needed[0], segment_size) if needed else None,
        wal_last=segment_name(*needed[-1], segment_size) if needed else None,
        wal_segments=len(needed),
        wal_bytes=sum(scan.sizes.get(k, 0) for k in needed),
        backup_bytes=int(getattr(backup, "stored_bytes", 0) or 0),
        gap=gap,
    )


def _tli(backup: Any) -> int:
    return int(getattr(backup, "timeline", 1) or 1)


def _start(backup: Any) -> Lsn:
    lsn = as_lsn(getattr(backup, "start_lsn", None)) or as_lsn(backup.stop_lsn)
    assert lsn is not None
    return lsn


def _last_needed(target: RecoveryTarget, window: BackupWindow, segment_size: int) -> int:
    stop = window.from_lsn
    if target.kind == "immediate":
        return stop.segment_number(segment_size)
    if target.kind == "lsn" and target.lsn is not None:
        return target.lsn.segment_number(segment_size)
    return window.wal.last_segno


# --- recovery settings -------------------------------------------------------------------------------


def restore_command(opsdb_executable: str, config_path: str | None, cluster: str | None) -> str:
    """restore_command calling opsdb wal-fetch with the same config (absolute paths: the server's cwd is
    its data directory)."""
    parts = [os.path.abspath(opsdb_executable)]
    if config_path:
        parts += ["--config", os.path.abspath(config_path)]
    if cluster:
        parts += ["--cluster", cluster]
    return " ".join(shlex.quote(p) for p in parts) + ' wal-fetch "%f" "%p"'


def recovery_settings(
    target: RecoveryTarget,
    command: str,
    *,
    timeline: int | None = None,
    standby: bool = False,
    primary_conninfo: str | None = None,
    slot: str | None = None,
    archive: bool = True,
) -> dict[str, str]:
    """The settings for postgresql.auto.conf (pg/recovery.write_recovery writes them, after removing
    every recovery_target* line the backup carried)."""
    settings: dict[str, str] = {"restore_command": command}
    if standby:
        # a standby follows the primary across promotions
        settings["recovery_target_timeline"] = "latest" if timeline is None else str(timeline)
        settings["primary_conninfo"] = primary_conninfo or ""
        settings["primary_slot_name"] = slot or ""
    else:
        settings.update(target.recovery_settings())
        settings["primary_conninfo"] = ""
        settings["primary_slot_name"] = ""
    if timeline is not None and not standby:
        settings["recovery_target_timeline"] = str(timeline)
    if not archive:
        # a scratch copy must never archive into the production archive (a drill's promotion would
        # create a new timeline there, which a later `--timeline latest` restore would follow)
        settings["archive_mode"] = "off"
    return settings


# --- opsdb restore: the PITR part of the plan and of --start ----------------------------------------


def opsdb_executable() -> str:
    """The opsdb command PostgreSQL should run: $OPSDB_EXECUTABLE (when the server's OS user needs another
    installation), else the one beside this interpreter, else on PATH, else argv[0]."""
    import shutil
    import sys

    if os.environ.get("OPSDB_EXECUTABLE"):
        return os.environ["OPSDB_EXECUTABLE"]
    beside = Path(sys.executable).with_name("opsdb")
    if beside.exists():
        return str(beside)
    return shutil.which("opsdb") or os.path.abspath(sys.argv[0])


def plan_for_restore(
    target: RecoveryTarget | None,
    backups: Sequence[Any],
    scan: ArchiveScan,
    *,
    backup_id: str | None,
    standby: bool,
    accept_gap: bool = False,
    read_end: Callable[[Sequence[str]], RecoveryEnd | None] | None = None,
    timeline: str | int = "latest",
) -> RecoveryPlan | None:
    """The PITR plan for `opsdb restore`, or None when the restore is just the backup's own end point:
    no target given, no standby, and no archived WAL to replay after the backup (--latest, the default,
    then reaches exactly the backup's end). A gap is refused for the default target too. `timeline`:
    what a restore without a target follows (the primary's line, ops/recovery/timelines.py)."""
    options: dict[str, Any] = {"backup_id": backup_id, "accept_gap": accept_gap, "read_end": read_end}
    if standby or target is not None:
        return plan_recovery(target or RecoveryTarget(), backups, scan, **options)
    try:
        plan = plan_recovery(RecoveryTarget(timeline=timeline), backups, scan, **options)
    except GapRefused:
        raise
    except UsageError:
        return None  # nothing archived for this backup: its own WAL takes it to its end point
    if plan.gap is not None:
        return plan  # an accepted gap is carried into the settings, the plan and the result
    return plan if plan.window.to_lsn > plan.window.from_lsn else None


def restore_settings(
    plan: RecoveryPlan,
    command: str,
    *,
    standby: bool,
    primary_conninfo: str | None,
    slot: str | None,
) -> tuple[str, dict[str, str], str]:
    """(target label, postgresql.auto.conf settings, signal file) for a restore with a PITR plan."""
    # a standby follows the primary's promotions ('latest') unless a timeline was asked for
    settings = recovery_settings(
        plan.target,
        command,
        timeline=None if standby and plan.target.timeline == "latest" else plan.timeline,
        standby=standby,
        primary_conninfo=primary_conninfo,
        slot=slot,
    )
    return (
        ("standby" if standby else plan.target.label()),
        settings,
        (STANDBY_SIGNAL if standby else RECOVERY_SIGNAL),
    )


def plan_text(doc: Mapping[str, Any]) -> str:
    """The PITR part of a --dry-run plan, for an operator: backup, target in UTC, window, WAL, bytes."""
    target = doc["target"]
    value = f" {target['value']}" if target.get("value") else ""
    window = doc["window"]
    wal = doc["wal"]
    lines = [
        f"recovery target: {target['kind']}{value} on timeline {target['timeline']}, then {target['action']}",
        *([f"timeline: {doc['timeline_choice']}"] if doc.get("timeline_choice") else []),
        f"backup {doc['backup_id']} can reach {window['from']} (LSN {window['from_lsn']}) .. "
        f"{window['to']} (LSN {window['to_lsn']})",
    ]
    if wal["segments"]:
        lines.append(f"WAL from the archive: {wal['first']} .. {wal['last']} ({wal['segments']} segments)")
    else:
        lines.append("WAL from the archive: none (the backup's own WAL)")
    reaches = doc.get("reaches") or {}
    point = ", ".join(p for p in (reaches.get("time"), reaches.get("lsn") and f"LSN {reaches['lsn']}") if p)
    lines.append(f"the restore reaches: {reaches.get('how', '?')}" + (f" ({point})" if point else ""))
    if gap := doc.get("gap"):
        lines.append(
            f"WAL gap: {gap['first_missing']} is missing (the archive resumes at {gap['resumes_at']}); "
            f"accepted with --accept-gap: {gap['requested']} becomes the end of the WAL before the gap"
        )
    lines.append(f"bytes to read: {doc['bytes_to_read']}")
    return "\n".join(lines)
