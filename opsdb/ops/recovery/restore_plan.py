"""`opsdb restore`, the plan: which backup, which directories, which recovery settings. It writes
nothing, so `--dry-run` stops here and every refusal (exit 2) comes before anything is changed.

Recovery target: without a point-in-time target the server replays the WAL carried in the backup
(base.tar's pg_wal/) to its end, the backup's consistent end point, and promotes onto a new
timeline, so it never continues the source's timeline in a shared archive (`recovery_for`); with
one, ops/recovery/pitr.py plans it (`_pitr_plan`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from opsdb.errors import NotFound, OperationFailed, UsageError
from opsdb.model.catalog import BASE_OBJECT, PHYSICAL, BackupRecord, RestorePlan, RestoreStep
from opsdb.ops.recovery.durable import DEFAULT_SYNC_METHOD
from opsdb.pg.recovery import RECOVERY_SIGNAL
from opsdb.proc import pid_alive
from opsdb.repo import catalog
from opsdb.storage.base import Storage

OnBytes = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class RestoreRequest:
    cluster: str
    target_dir: Path
    backup_id: str | None = None  # None: the newest complete physical backup
    tablespace_map: tuple[tuple[str, str], ...] = ()  # (OLD location, oid or name, NEW directory)
    start: bool = False
    port: int | None = None
    os_user: str | None = None  # owner of the restored files and the server, when run as root
    bin_dir: Path | None = None  # needed for --start
    start_timeout: float = 3600.0  # --wait-timeout: how long --start waits for the target
    # point-in-time recovery (ops/recovery/pitr.py): a model.target.RecoveryTarget, or None for the default
    recovery: Any = None
    standby: bool = False
    primary_conninfo: str | None = None
    slot: str | None = None
    restore_command: str = "false"  # `opsdb ... wal-fetch %f %p` when the archive is used
    sync_method: str | None = DEFAULT_SYNC_METHOD  # ops/recovery/durable.py; None: --no-sync
    archive_mode: str | None = None  # "off" | "keep"; None: off, or unchanged for a standby
    accept_gap: bool = False  # --accept-gap: restore up to a gap in the archived WAL instead of refusing
    conninfo: str | None = None  # the cluster's conninfo: its user and password open the restored server
    # no --timeline given: follow the primary's line (ops/recovery/timelines.py), the live primary's timeline
    # when it answered (live_timeline), else the newest backup's
    follow_primary: bool = False
    live_timeline: int | None = None


# --- plan ------------------------------------------------------------------------------------------


def plan_restore(
    request: RestoreRequest, *, storage: Storage, keys: Mapping[str, Any], read_end: Any = None
) -> RestorePlan:
    """Pick the backup, check the target and tablespace directories, list the steps. Writes nothing;
    UsageError (exit 2) for a target that is not empty or belongs to a running server, or that the
    archived WAL cannot reach (a gap, a time after the last commit). read_end: ops/recovery/pitr_reach.py."""
    if request.start and request.port is None:
        raise UsageError("--start needs --port P (the port the restored server listens on)")
    archive_mode = _archive_mode(request)
    if request.backup_id:
        with contextlib.suppress(NotFound):  # an unknown id is refused below, as bad input
            catalog.load_backup(storage, request.cluster, request.backup_id, keys)  # its entry must be its own
    pitr_plan = _pitr_plan(request, storage, keys, read_end)
    if pitr_plan is not None:
        record = pitr_plan.backup
    elif request.backup_id:
        record = catalog.load_backup(storage, request.cluster, request.backup_id, keys)
    else:
        record = catalog.latest_backup(storage, request.cluster, keys, kind=PHYSICAL)
    if not record.is_physical:
        raise UsageError(f"{record.id} is a logical dump: restore it with `opsdb restore-dump {record.id}`")
    target = Path(os.path.abspath(request.target_dir))
    check_target_dir(target)
    spaces = tablespace_destinations(record, request.tablespace_map, target)
    chain: tuple[str, ...] = ()
    steps: list[RestoreStep] = []
    if record.is_incremental:  # the whole chain, checked now, combined at execute (ops/recovery/restore_chain.py)
        from opsdb.ops.recovery.restore_chain import chain_plan

        chain, steps, staging = chain_plan(storage, request.cluster, record, keys, target)
    for obj in record.objects if not chain else ():
        if obj.name == BASE_OBJECT:
            steps.append(RestoreStep(obj.name, str(target), obj.stored_size, obj.size))
        elif obj.name == "pg_wal.tar":
            steps.append(RestoreStep(obj.name, str(target / "pg_wal"), obj.stored_size, obj.size))
    if not steps:
        raise OperationFailed(f"backup {record.id} lists no base.tar: it cannot be restored")
    for space in record.tablespaces:
        obj = record.object(space.object_name)
        if obj is None:
            raise OperationFailed(f"backup {record.id} lists tablespace {space.name} but not its object")
        steps.append(RestoreStep(obj.name, spaces[space.oid], obj.stored_size, obj.size))
    signal: str | None
    if pitr_plan is not None:
        from opsdb.ops.recovery.pitr import restore_settings

        target_name, settings, signal = restore_settings(
            pitr_plan,
            request.restore_command,
            standby=request.standby,
            primary_conninfo=request.primary_conninfo,
            slot=request.slot,
        )
    else:
        target_name, settings, signal = recovery_for(record)
    if archive_mode == "off":
        # a copy restored next to the primary must not archive its new timeline into the primary's
        # repository as the same cluster (info, restore and drills would follow that timeline)
        settings = {**settings, "archive_mode": "off"}
    return RestorePlan(
        backup=record,
        target_dir=str(target),
        steps=tuple(steps),
        tablespace_map=spaces,
        target=target_name,
        recovery_settings=settings,
        signal_file=signal,
        start=request.start,
        port=request.port,
        recovery=pitr_plan.to_json() if pitr_plan is not None else None,
        archive_mode=archive_mode,
        chain=chain,
        staging_dir=staging if chain else None,
    )


def _archive_mode(request: RestoreRequest) -> str:
    if request.archive_mode not in (None, "off", "keep"):
        raise UsageError(f"--archive-mode must be off or keep, not {request.archive_mode!r}")
    if request.standby:
        if request.archive_mode is not None:
            raise UsageError(
                "--archive-mode is for a restore that promotes; a standby keeps the archive settings of its backup"
            )
        return "standby"
    return request.archive_mode or "off"


def _pitr_plan(request: RestoreRequest, storage: Storage, keys: Mapping[str, Any], read_end: Any) -> Any:
    """ops/recovery/pitr.py's plan when the restore replays archived WAL (a target, --standby, or archived WAL
    after the backup for the default --latest); None for the backup's own end point."""
    from opsdb.ops.recovery.timelines import plan_on_line
    from opsdb.repo import wal as repo_wal

    backups = catalog.list_backups(storage, request.cluster, keys, kind=PHYSICAL, skip_unreadable=True)
    scan = repo_wal.scan(storage, request.cluster, keys)
    return plan_on_line(
        request.recovery,
        backups,
        scan,
        backup_id=request.backup_id,
        standby=request.standby,
        accept_gap=request.accept_gap,
        read_end=read_end,
        follow_primary=request.follow_primary,
        live=request.live_timeline,
    )


def recovery_for(record: BackupRecord) -> tuple[str, dict[str, str], str | None]:
    """(target name, postgresql.auto.conf settings, signal file) for the restore.

    The backup's consistent end point: archive recovery over exactly the WAL inside the backup (a
    restore_command that finds nothing, so pg_wal/ is used) to its end, then promotion onto a new
    timeline. No recovery_target is set on purpose: a backup taken from a standby becomes consistent
    exactly at the end of its WAL, where recovery_target = 'immediate' would fail with "recovery
    ended before configured recovery target was reached". WAL that ends before the backup's end
    still fails, as it must ("WAL ends before end of online backup")."""
    settings = {
        "restore_command": "false",
        "recovery_target_timeline": "current",
    }
    return "immediate", settings, RECOVERY_SIGNAL


def check_target_dir(target: Path) -> None:
    """Refuse a target that holds anything (and name a running server in it)."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"unable to restore into {target}: it exists and is not a directory")
    if not target.exists():
        return
    pid_file = target / "postmaster.pid"
    if pid_file.exists():
        pid = _postmaster_pid(pid_file)
        if pid is not None and pid_alive(pid):
            raise UsageError(
                f"unable to restore into {target}: a PostgreSQL server (pid {pid}) is running there",
                hint="stop it and choose an empty directory; nothing was changed",
            )
    if any(target.iterdir()):
        raise UsageError(
            f"unable to restore into {target}: the directory is not empty",
            hint="restore into an empty or missing directory; nothing was changed",
        )


def tablespace_destinations(record: BackupRecord, mapping: tuple[tuple[str, str], ...], target: Path) -> dict[int, str]:
    """oid -> directory for each tablespace: --tablespace-map OLD=NEW (OLD: the original location,
    the oid or the name), else the original location. Each must be absolute and empty or missing."""
    wanted = {old.rstrip("/") or "/": new for old, new in mapping}
    aliases = {a for t in record.tablespaces for a in (t.location.rstrip("/"), str(t.oid), t.name)}
    unknown = sorted(set(wanted) - aliases)
    if unknown:
        known = ", ".join(f"{t.location} ({t.name}, oid {t.oid})" for t in record.tablespaces) or "none"
        raise UsageError(f"--tablespace-map {unknown[0]}: no such tablespace in backup {record.id} (has: {known})")
    out: dict[int, str] = {}
    for space in record.tablespaces:
        new = None
        for alias in (space.location.rstrip("/"), str(space.oid), space.name):
            if alias in wanted:
                new = wanted[alias]
        where = Path(new or space.location)
        if not where.is_absolute():
            raise UsageError(f"tablespace {space.name}: {where} is not an absolute path")
        where = Path(os.path.abspath(where))
        if where == target or target in where.parents:
            raise UsageError(f"tablespace {space.name}: {where} must not be inside the target directory")
        if where.exists() and (not where.is_dir() or any(where.iterdir())):
            raise UsageError(
                f"unable to restore tablespace {space.name} into {where}: it is not an empty directory",
                hint=f"map it elsewhere: --tablespace-map {space.location}=/new/empty/dir",
            )
        out[space.oid] = str(where)
    return out


def parse_tablespace_map(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items or ():
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"invalid --tablespace-map {item!r}: expected OLD=NEW")
        pairs.append((old.rstrip("/") or "/", new))
    return tuple(pairs)


def _postmaster_pid(pid_file: Path) -> int | None:
    try:
        first = pid_file.read_text().splitlines()[0].strip()
        return int(first)
    except (OSError, ValueError, IndexError):
        return None
