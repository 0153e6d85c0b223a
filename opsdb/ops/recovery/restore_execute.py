"""`opsdb restore`, carrying the plan out (restore_plan.py decided everything).

Create the target (0700) and tablespace directories, stream each tar object into place
(ops/recovery/extract.py; an incremental's chain through restore_chain.py), check the files against
backup_manifest, point tablespace_map at the restored locations, write the recovery settings
(pg/recovery.py), hand everything to os_user when run as root, sync it all to disk
(ops/recovery/durable.py: fsync or syncfs; --no-sync skips), and with --start start the server and
watch it to its target (restore_start.py). If anything fails before the server starts, what this run
created is removed again.
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
from typing import Any

from opsdb.errors import OperationFailed, UsageError
from opsdb.model.catalog import RestorePlan
from opsdb.ops.common.phases import phase
from opsdb.ops.recovery.durable import SyncReport, sync_trees
from opsdb.ops.recovery.extract import extract_object
from opsdb.ops.recovery.restore_plan import OnBytes, RestoreRequest, check_target_dir
from opsdb.pg.recovery import write_recovery
from opsdb.proc import Runner
from opsdb.repo import layout
from opsdb.storage.base import Storage


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
    phase(
        "restore",
        "fetch",
        backup_id=plan.backup.id,
        objects=len(plan.steps),
        bytes=plan.bytes_to_write,
        target_dir=plan.target_dir,
    )
    try:
        if plan.chain:
            from opsdb.ops.recovery.restore_chain import stage_and_combine

            total += stage_and_combine(
                storage,
                keys,
                plan.backup.cluster,
                plan.chain,
                plan.steps,
                target,
                runner=runner,
                bin_dir=request.bin_dir,
                major=(plan.backup.pg_version_num or 0) // 10000 or None,
                on_bytes=on_bytes,
            )
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
