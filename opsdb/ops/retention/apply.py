"""`opsdb retention apply`: run the retention plan against the repository, crash-safe and resumable.

Deleting one backup or dump (id X of cluster C):
  1. write clusters/C/deleting/X.json (a plain JSON marker: id, kind, rules, time);
  2. delete the catalog entry clusters/C/catalog/X.json: from here on X is no longer a backup anyone
     can restore or count, so a half-deleted backup never looks complete;
  3. delete every object under clusters/C/backups/X/;
  4. delete the marker.
A run killed anywhere in between leaves a marker; the next run finishes every marked deletion before
it plans anything. WAL goes last, computed from the backups that really remain, so a crash before
the WAL step only leaves WAL that is no longer needed (deleted on the next run).

Locks: a real run holds the cluster's "backup" and "dump" repository locks (repo/lock.py, the same
objects `opsdb backup` and `opsdb dump` take) from before it finishes interrupted deletions until the
last WAL file is gone, so no backup or dump starts or commits while retention decides and deletes.
The catalog is read through repo.catalog (only committed entries) after the locks are taken.

Dry run: pass a DryRunStorage; the same code runs, records the deletes it would make and changes
nothing. Object Lock: with object_lock_days, an object written less than that many days ago cannot
be removed yet; such a backup is kept for now and reported with the date it can go (its WAL is kept
with it), instead of failing the run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from opsdb.errors import LockHeld, OpsdbError, RepositoryUnavailable
from opsdb.model.catalog import LOGICAL, BackupRecord
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE
from opsdb.model.retention import (
    Decision,
    RetentionPlan,
    RetentionPolicy,
    WalExpiry,
    item_from_record,
    plan,
    wal_expiry,
)
from opsdb.ops.common.codec import repository
from opsdb.ops.common.phases import phase
from opsdb.repo import catalog, layout
from opsdb.repo import wal as repo_wal
from opsdb.repo.lock import DEFAULT_TTL, RepositoryLock
from opsdb.storage.base import DryRunStorage, Storage

if TYPE_CHECKING:  # types only: cryptography is imported by stream.crypto alone
    from opsdb.config import Settings
    from opsdb.stream.crypto import EncryptionKey

# The locks `opsdb backup` and `opsdb dump` take (ops/backup/physical.py, ops/dump/logical.py), in the order
# retention takes them.
LOCK_KINDS = ("backup", "dump")


@dataclasses.dataclass(frozen=True)
class Locked:
    """Something retention would delete but Object Lock keeps until `until`."""

    id: str
    kind: str  # backup | dump | wal
    until: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "until": self.until.isoformat()}


@dataclasses.dataclass
class RetentionResult:
    cluster: str
    dry_run: bool
    plan: RetentionPlan
    deleted_backups: list[str] = dataclasses.field(default_factory=list)
    deleted_dumps: list[str] = dataclasses.field(default_factory=list)
    wal: list[WalExpiry] = dataclasses.field(default_factory=list)
    wal_files_deleted: int = 0
    resumed: list[str] = dataclasses.field(default_factory=list)
    locked: list[Locked] = dataclasses.field(default_factory=list)
    objects_deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        doc = self.plan.to_dict()
        return {
            "cluster": self.cluster,
            "dry_run": self.dry_run,
            "now": doc["now"],
            "backups": doc["backups"],
            "dumps": doc["dumps"],
            "wal": [w.to_dict() for w in self.wal],
            "resumed": self.resumed,
            "locked": [x.to_dict() for x in self.locked],
            "summary": {
                "backups_deleted": len(self.deleted_backups),
                "dumps_deleted": len(self.deleted_dumps),
                "wal_files_deleted": self.wal_files_deleted,
                "objects_deleted": self.objects_deleted,
                "locked": len(self.locked),
                "resumed": len(self.resumed),
            },
        }


def policy_from_config(retention: Any) -> RetentionPolicy:
    """RetentionPolicy from a config.RetentionConfig (or any object/dict with the same fields)."""
    values = retention if isinstance(retention, dict) else retention.model_dump()
    return RetentionPolicy.from_mapping(values)


def split_records(records: Iterable[BackupRecord]) -> tuple[list[BackupRecord], list[BackupRecord]]:
    """(physical backups, logical dumps) from one catalog listing."""
    backups: list[BackupRecord] = []
    dumps: list[BackupRecord] = []
    for record in records:
        (dumps if record.kind == LOGICAL else backups).append(record)
    return backups, dumps


@contextmanager
def cluster_locks(
    storage: Storage, cluster: str, kinds: Sequence[str] = LOCK_KINDS, *, ttl: timedelta = DEFAULT_TTL
) -> Iterator[list[RepositoryLock]]:
    """Hold the cluster's backup and dump locks (the ones `opsdb backup` / `opsdb dump` take) for the block.

    Retention deletes both kinds and the WAL backups need, so it runs only while neither a backup nor
    a dump of the cluster runs, and neither starts until it is done. Taken in a fixed order; a lock
    that is held makes the run fail before anything is deleted (the locks already taken are released).
    """
    with ExitStack() as stack:
        held = []
        for kind in kinds:
            lock = RepositoryLock(storage, cluster, kind, command="retention", ttl=ttl)
            try:
                stack.enter_context(lock)
            except LockHeld as exc:
                raise LockHeld(
                    f"unable to apply retention to cluster {cluster}: {exc.message.removeprefix('unable to start: ')}",
                    hint="a backup, dump or another retention run is in progress; run again when it has finished",
                ) from None
            held.append(lock)
        yield held


def apply(
    storage: Storage,
    cluster: str,
    policy: RetentionPolicy,
    keys: Mapping[str, EncryptionKey],
    *,
    now: datetime,
    tz: str | tzinfo | None = "UTC",
    dry_run: bool = False,
    object_lock_days: int = 0,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    lock_ttl: timedelta = DEFAULT_TTL,
) -> RetentionResult:
    """Apply the policy to the cluster's catalog (read through repo.catalog with `keys`) and WAL archive.

    A real run holds the cluster's backup and dump locks throughout (cluster_locks), finishes
    interrupted deletions, then reads the catalog and plans. A dry run takes no lock and runs the same
    code on a DryRunStorage (pass one to inspect its .writes/.deletes; any other storage is wrapped).
    """
    if dry_run and not isinstance(storage, DryRunStorage):
        storage = DryRunStorage(storage)
    held: AbstractContextManager[list[RepositoryLock]] = (
        nullcontext([]) if dry_run else cluster_locks(storage, cluster, ttl=lock_ttl)
    )
    with held as locks:

        def still_locked() -> None:
            for lock in locks:  # a run whose lock was taken over must stop deleting
                lock.check()

        resumed = [] if dry_run else resume(storage, cluster)
        backups, dumps = split_records(catalog.list_backups(storage, cluster, keys))
        wal_files = repo_wal.list_archive(storage, cluster, segment_size)
        the_plan = plan(policy, backups, dumps, [f.wal for f in wal_files], now, tz, segment_size=segment_size)
        result = RetentionResult(cluster, dry_run, the_plan, resumed=resumed)
        phase(
            "retention",
            "plan",
            backups=len(backups),
            dumps=len(dumps),
            wal_files=len(wal_files),
            expired=sum(1 for d in (*the_plan.backups, *the_plan.dumps) if not d.keep),
            dry_run=dry_run or None,
        )
        mtimes = _object_mtimes(storage, cluster) if object_lock_days else {}
        lock_for = timedelta(days=object_lock_days)

        retained_ids = {d.id for d in the_plan.backups if d.keep}
        for decisions, kind, done in (
            (the_plan.backups, "backup", result.deleted_backups),
            (the_plan.dumps, "dump", result.deleted_dumps),
        ):
            for decision in decisions:
                if decision.keep:
                    continue
                until = _locked_until(mtimes.get(decision.id, []), lock_for, now)
                if until is not None:
                    result.locked.append(Locked(decision.id, kind, until))
                    if kind == "backup":
                        retained_ids.add(decision.id)
                    continue
                still_locked()
                phase(
                    "retention",
                    "expire " + kind,
                    id=decision.id,
                    stop_time=decision.stop_time.isoformat(),
                    rules=",".join(decision.rules),
                    dry_run=dry_run or None,
                )
                result.objects_deleted += delete_backup(storage, cluster, decision, kind)
                done.append(decision.id)

        retained = [item_from_record(b, segment_size) for b in backups if b.id in retained_ids]
        wal_mtime = {f.wal.name: f.info.mtime for f in wal_files}
        for run in wal_expiry([i for i in retained if i.complete], [f.wal for f in wal_files], segment_size):
            free = (
                [n for n in run.names if _locked_until([wal_mtime.get(n, 0.0)], lock_for, now) is None]
                if object_lock_days
                else list(run.names)
            )
            if len(free) < len(run.names):
                newest = max(wal_mtime.get(n, 0.0) for n in run.names if n not in free)
                until = _locked_until([newest], lock_for, now)
                assert until is not None
                result.locked.append(Locked(f"{run.first}..{run.last}", "wal", until))
            if free:
                still_locked()
                phase(
                    "retention",
                    "expire wal",
                    first=free[0],
                    last=free[-1],
                    files=len(free),
                    reason=run.reason,
                    dry_run=dry_run or None,
                )
                storage.delete(layout.wal_object(cluster, n) for n in free)
                result.wal_files_deleted += len(free)
                result.wal.append(dataclasses.replace(run, names=tuple(free)) if len(free) < len(run.names) else run)
        return result


def delete_backup(storage: Storage, cluster: str, decision: Decision, kind: str) -> int:
    """Marker, catalog entry, objects, marker removal (see the module docstring). Returns objects deleted."""
    marker = {
        "id": decision.id,
        "kind": kind,
        "rules": list(decision.rules),
        "stop_time": decision.stop_time.isoformat(),
    }
    storage.put(layout.deleting_marker(cluster, decision.id), [json.dumps(marker).encode()])
    return _finish(storage, cluster, decision.id)


def _finish(storage: Storage, cluster: str, backup_id: str) -> int:
    storage.delete([layout.catalog_entry(cluster, backup_id)])
    keys = [info.key for info in storage.list(layout.backup_prefix(cluster, backup_id))]
    if keys:
        storage.delete(keys)
    storage.delete([layout.deleting_marker(cluster, backup_id)])
    return len(keys)


def resume(storage: Storage, cluster: str) -> list[str]:
    """Finish every deletion a killed run left marked. Returns the ids finished."""
    finished = []
    for info in list(storage.list(layout.deleting_prefix(cluster))):
        name = info.key.rsplit("/", 1)[-1]
        if not name.endswith(".json"):
            continue
        backup_id = name[: -len(".json")]
        try:
            _finish(storage, cluster, backup_id)
        except RepositoryUnavailable:
            raise
        except OpsdbError:
            continue  # e.g. an invalid id in a stray file: never guess, leave it for an operator
        finished.append(backup_id)
    return finished


def _object_mtimes(storage: Storage, cluster: str) -> dict[str, list[float]]:
    """backup id -> mtimes of its objects and catalog entry (for Object Lock dates)."""
    out: dict[str, list[float]] = {}
    base = layout.cluster_prefix(cluster) + "backups/"
    for info in storage.list(base):
        backup_id = info.key[len(base) :].split("/", 1)[0]
        out.setdefault(backup_id, []).append(info.mtime)
    for info in storage.list(layout.catalog_prefix(cluster)):
        backup_id = info.key.rsplit("/", 1)[-1].removesuffix(".json")
        out.setdefault(backup_id, []).append(info.mtime)
    return out


def _locked_until(mtimes: list[float], lock_for: timedelta, now: datetime) -> datetime | None:
    if not mtimes or lock_for <= timedelta(0):
        return None
    until = datetime.fromtimestamp(max(mtimes), tz=now.tzinfo) + lock_for
    return until if until > now else None


# --- wiring from settings ------------------------------------------------------------------------


def apply_from_settings(
    settings: Settings, cluster: str, *, dry_run: bool = False, now: datetime | None = None
) -> RetentionResult:
    """Open the repository from config.Settings and apply the cluster's policy (the CLI's one call).

    A dry run opens the repository read-only and previews through a DryRunStorage on top of it."""
    repo = repository(settings, writable=not dry_run)
    cfg = settings.clusters[cluster]
    storage: Storage = DryRunStorage(repo.storage) if dry_run else repo.storage
    return apply(
        storage,
        cluster,
        policy_from_config(cfg.retention),
        repo.keys,
        now=now or datetime.now(UTC),
        tz=cfg.timezone,
        dry_run=dry_run,
        object_lock_days=settings.repository.object_lock_days,
    )
