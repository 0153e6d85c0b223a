"""`opsdb restore`: plan() decides everything and writes nothing; execute() carries the plan out.

    plan = plan_restore(request, storage=..., keys=...)      # --dry-run stops here
    result = execute_restore(plan, request, storage=..., keys=..., runner=...)

execute: create the target (0700) and tablespace directories, stream each tar object into place
(ops/recovery/extract.py), point tablespace_map at the restored locations, write the recovery settings
(pg/recovery.py, the one place they are written), hand everything to os_user when run
as root, sync it all to disk (ops/recovery/durable.py: fsync or syncfs; --no-sync skips), and with --start start the server and wait until it accepts connections and has left
recovery. If anything fails before the server starts, what this run created is removed again.

Recovery target: without a point-in-time target the server replays the WAL carried in the backup
(base.tar's pg_wal/) to its end, the backup's consistent end point, and promotes onto a new
timeline, so it never continues the source's timeline in a shared archive.
`recovery_for()` is where PITR targets plug in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdb.errors import NotFound, OperationFailed, UsageError
from opsdb.model.catalog import BASE_OBJECT, PHYSICAL, BackupRecord, RestorePlan, RestoreStep
from opsdb.ops.common.phases import phase
from opsdb.ops.recovery.durable import DEFAULT_SYNC_METHOD, SyncReport, sync_trees
from opsdb.ops.recovery.extract import extract_object
from opsdb.pg.recovery import RECOVERY_SIGNAL, write_recovery
from opsdb.proc import Runner, pid_alive
from opsdb.repo import catalog, layout
from opsdb.storage.base import Storage

if TYPE_CHECKING:
    from opsdb.config import ClusterConfig, Settings

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


@dataclasses.dataclass(frozen=True)
class RestoreResult:
    plan: RestorePlan
    bytes_read: int
    seconds: float
    recovery_point: dict[str, Any] | None = None  # what the started server reached
    sync: SyncReport | None = None  # None: not synced (--no-sync)
    manifest: str | None = None  # how the restored files were checked against backup_manifest
    replay_seconds: float = 0.0  # of `seconds`, the time --start watched the server replay (the rest wrote)

    def to_dict(self) -> dict[str, Any]:
        """The SPEC's `restore --json` object (plus sizes)."""
        return {
            "backup_id": self.plan.backup.id,
            "target": self.plan.target,
            "recovery_point": self.recovery_point,
            "target_dir": self.plan.target_dir,
            "archive_mode": self.plan.archive_mode,
            "reaches": (self.plan.recovery or {}).get("reaches"),
            "gap": (self.plan.recovery or {}).get("gap"),
            "manifest": self.manifest,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "replay_seconds": round(self.replay_seconds, 3),
            "synced": self.sync is not None,
            "sync": self.sync.to_dict() if self.sync is not None else None,
        }


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
            pitr_plan, request.restore_command, standby=request.standby,
            primary_conninfo=request.primary_conninfo, slot=request.slot,
        )  # fmt: skip
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
        request.recovery, backups, scan, backup_id=request.backup_id, standby=request.standby,
        accept_gap=request.accept_gap, read_end=read_end,
        follow_primary=request.follow_primary, live=request.live_timeline,
    )  # fmt: skip


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


# --- execute ---------------------------------------------------------------------------------------


def execute_restore(
    plan: RestorePlan,
    request: RestoreRequest,
    *,
    storage: Storage,
    keys: Mapping[str, Any],
    runner: Runner,
    on_bytes: OnBytes | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> RestoreResult:
    """Extract, check the files against backup_manifest, write the recovery settings; with --start,
    start and watch the server (ops/recovery/restore_start.py). on_progress: (WAL replayed, WAL to replay) bytes."""
    from opsdb.ops.recovery.restore_manifest import check_restored_files

    started = time.monotonic()
    target = Path(plan.target_dir)
    check_target_dir(target)  # again: time passed since the plan
    created = _make_dirs(target, plan.tablespace_map.values())
    total = 0
    phase("restore", "fetch", backup_id=plan.backup.id, objects=len(plan.steps), bytes=plan.bytes_to_write,
          target_dir=plan.target_dir)  # fmt: skip
    try:
        if plan.chain:
            from opsdb.ops.recovery.restore_chain import stage_and_combine

            total += stage_and_combine(
                storage, keys, plan.backup.cluster, plan.chain, plan.steps, target, runner=runner,
                bin_dir=request.bin_dir, major=(plan.backup.pg_version_num or 0) // 10000 or None, on_bytes=on_bytes,
            )  # fmt: skip
        for step in plan.steps if not plan.chain else ():
            dest = Path(step.dest)
            dest.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = layout.backup_object(plan.backup.cluster, plan.backup.id, step.object)
            total += extract_object(storage, key, keys, dest, on_bytes=on_bytes)
        if not (target / "PG_VERSION").is_file():
            raise OperationFailed(f"backup {plan.backup.id} restored no data directory (no PG_VERSION)")
        phase("restore", "check", backup_id=plan.backup.id, written_bytes=total)
        if plan.chain:  # members were checked as they were extracted; the combined result here
            from opsdb.ops.recovery.restore_chain import check_combined

            major = (plan.backup.pg_version_num or 0) // 10000 or None
            manifest = check_combined(target, runner=runner, bin_dir=request.bin_dir, major=major)
        else:
            manifest = check_restored_files(
                storage, keys, plan.backup, target, plan.tablespace_map, bin_dir=request.bin_dir, runner=runner
            )
        (target / "pg_wal" / "archive_status").mkdir(mode=0o700, parents=True, exist_ok=True)
        write_tablespace_map(target, plan.tablespace_map)
        phase("restore", "recovery config", signal_file=plan.signal_file, target=plan.target)
        write_recovery(target, plan.recovery_settings, plan.signal_file)  # os_user: the whole tree, below
        roots = [target, *(Path(p) for p in plan.tablespace_map.values())]
        for path in roots:
            os.chmod(path, 0o700)
            _chown_tree(path, request.os_user)
        phase("restore", "sync", method=request.sync_method or "none (--no-sync)")
        synced = sync_trees(roots, request.sync_method) if request.sync_method else None  # durable before success
    except BaseException:
        _remove_created(created)
        raise
    point = None
    written = time.monotonic()
    if plan.start:
        from opsdb.ops.recovery.restore_start import start_restored

        point = start_restored(plan, request, runner, on_progress)
    ended = time.monotonic()
    return RestoreResult(plan, total, ended - started, point, synced, manifest, replay_seconds=ended - written)


def _make_dirs(target: Path, spaces: Any) -> list[tuple[Path, bool]]:
    """Create the target and tablespace directories; remember which existed (empty) before."""
    created = []
    for path in [target, *(Path(p) for p in spaces)]:
        existed = path.exists()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        created.append((path, existed))
    return created


def _remove_created(created: list[tuple[Path, bool]]) -> None:
    """Undo a failed restore: empty the directories that were empty, remove the ones we made."""
    for path, existed in created:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
            continue
        for child in list(path.iterdir()) if path.is_dir() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()


def write_tablespace_map(target: Path, spaces: Mapping[int, str]) -> None:
    """Point tablespace_map (read by the server at its first start) at the restored locations."""
    path = target / "tablespace_map"
    if not spaces:
        return
    lines = [f"{oid} {where}" for oid, where in sorted(spaces.items())]
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


def _chown_tree(root: Path, os_user: str | None) -> None:
    if os_user is None or os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(os_user)
    except KeyError:
        raise UsageError(f"os_user {os_user!r} does not exist on this machine") from None
    os.chown(root, entry.pw_uid, entry.pw_gid)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), entry.pw_uid, entry.pw_gid)


# --- from settings ---------------------------------------------------------------------------------


def restore_from_settings(
    settings: Settings,
    cluster: str,
    *,
    target_dir: str,
    backup_id: str | None = None,
    tablespace_map: list[str] | None = None,
    start: bool = False,
    port: int | None = None,
    dry_run: bool = False,
    on_bytes: OnBytes | None = None,
    recovery: Any = None,
    standby: bool = False,
    primary_conninfo: str | None = None,
    slot: str | None = None,
    sync_method: str | None = DEFAULT_SYNC_METHOD,
    archive_mode: str | None = None,
    accept_gap: bool = False,
    wait_timeout: float = 3600.0,
    on_progress: Callable[[int, int | None], None] | None = None,
    follow_primary: bool = False,
) -> tuple[RestorePlan, RestoreResult | None]:
    """The CLI's one call: plan, and unless dry_run, execute. Returns (plan, result or None).
    follow_primary: no --timeline was given, so the restore follows the primary's line."""
    from opsdb.ops.common.codec import repository
    from opsdb.ops.common.estimate import announce_total
    from opsdb.ops.recovery.pitr_reach import end_reader
    from opsdb.ops.recovery.timelines import live_timeline
    from opsdb.proc import LocalRunner

    cfg = settings.clusters[cluster]
    repo = repository(settings)
    runner = LocalRunner()
    bin_dir = _bin_dir(cfg, required=start)
    request = RestoreRequest(
        cluster=cluster,
        target_dir=Path(target_dir),
        backup_id=backup_id,
        tablespace_map=parse_tablespace_map(tablespace_map),
        start=start,
        port=port,
        os_user=cfg.os_user if os.geteuid() == 0 else None,
        bin_dir=bin_dir,
        start_timeout=wait_timeout,
        recovery=recovery,
        standby=standby,
        primary_conninfo=primary_conninfo,
        slot=slot,
        restore_command=_restore_command(settings, cluster),
        sync_method=sync_method,
        archive_mode=archive_mode,
        accept_gap=accept_gap,
        conninfo=getattr(cfg, "conninfo", None),
        follow_primary=follow_primary and not standby,
        live_timeline=live_timeline(cfg.conninfo) if follow_primary and not standby else None,
    )
    read_end = end_reader(repo.storage, cluster, repo.keys, bin_dir, runner)
    plan = plan_restore(request, storage=repo.storage, keys=repo.keys, read_end=read_end)
    phase("restore", "plan", backup_id=plan.backup.id, target=plan.target, bytes_to_write=plan.bytes_to_write,
          wal_bytes=(plan.recovery or {}).get("wal_bytes"), dry_run=dry_run or None)  # fmt: skip
    if dry_run:
        return plan, None
    announce_total(on_bytes, plan.bytes_to_write)  # the progress bar's 100 %
    if plan.recovery is not None:  # prefetched files of an earlier restore into this directory go
        from opsdb.ops.wal.spool import clear_prefetch

        clear_prefetch(str(settings.wal.spool_dir), cluster, str(plan.target_dir), settings.repository.url)
    if start and cfg.pg_bin_dir is None and plan.backup.pg_version_num:  # the backup's major starts it
        from opsdb.pg.tools import find_bin_dir

        request = dataclasses.replace(request, bin_dir=find_bin_dir(None, plan.backup.pg_version_num // 10000))
    result = execute_restore(
        plan, request, storage=repo.storage, keys=repo.keys, runner=runner, on_bytes=on_bytes, on_progress=on_progress
    )
    return plan, result


def _bin_dir(cfg: ClusterConfig, *, required: bool) -> Path | None:
    """The cluster's PostgreSQL binaries: needed for --start, used when present for pg_waldump (the
    window's real end) and pg_verifybackup (the manifest check)."""
    from opsdb.pg.tools import find_bin_dir

    try:
        return find_bin_dir(cfg.pg_bin_dir)
    except UsageError:
        if required:
            raise
        return None


def _restore_command(settings: Settings, cluster: str) -> str:
    from opsdb.ops.recovery.pitr import opsdb_executable, restore_command

    config = str(settings.config_path) if settings.config_path else None
    return restore_command(opsdb_executable(), config, cluster)
