"""`opsdb restore`: plan_restore() decides everything and writes nothing (restore_plan.py);
execute_restore() carries the plan out (restore_execute.py).

    plan = plan_restore(request, storage=..., keys=...)      # --dry-run stops here
    result = execute_restore(plan, request, storage=..., keys=..., runner=...)

restore_from_settings() is the CLI's one call: the request from the validated settings, then both.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdb.errors import UsageError
from opsdb.model.catalog import RestorePlan
from opsdb.ops.common.phases import phase
from opsdb.ops.recovery.durable import DEFAULT_SYNC_METHOD
from opsdb.ops.recovery.restore_execute import RestoreResult, execute_restore
from opsdb.ops.recovery.restore_plan import OnBytes, RestoreRequest, parse_tablespace_map, plan_restore

if TYPE_CHECKING:
    from opsdb.config import ClusterConfig, Settings


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
    phase(
        "restore",
        "plan",
        backup_id=plan.backup.id,
        target=plan.target,
        bytes_to_write=plan.bytes_to_write,
        wal_bytes=(plan.recovery or {}).get("wal_bytes"),
        dry_run=dry_run or None,
    )
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
