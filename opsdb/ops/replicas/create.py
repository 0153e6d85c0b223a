"""`opsdb replicas create --from-primary | --from-backup`: a new standby, cloned from the primary or restored
from the repository, linked to the primary (ops/replicas/standby_link.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsdb.config import Settings
from opsdb.errors import DatabaseError, UsageError
from opsdb.ops.replicas.lag import DEFAULT_TIMEOUT, Connect
from opsdb.ops.replicas.standby_link import (
    StandbyLink,
    check_slot_name,
    check_slot_usable,
    create_slot,
    drop_slot,
    remove_passfile,
    slot_state,
    standby_link,
    write_passfile,
)
from opsdb.pg.conn import connect
from opsdb.pg.conninfo import make_conninfo, parse_conninfo
from opsdb.pg.recovery import STANDBY_SIGNAL, write_recovery
from opsdb.pg.tools import PgTools
from opsdb.proc import Runner


@dataclasses.dataclass(frozen=True)
class ReplicaCreated:
    target_dir: str
    source: str  # "primary" | "backup:<id>"
    slot: str | None
    application_name: str | None
    primary_conninfo_written: bool
    backup_id: str | None = None
    slot_created: bool = False
    passfile: str | None = None  # where the password for primary_conninfo is (never in the data directory)
    primary_conninfo: str | None = None  # as written (no password in it)
    bytes_read: int = 0

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _prepare_target(target: Path, run_as: str | None) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"unable to create a replica in {target}: the directory exists and is not empty")
    if run_as is not None:
        try:
            entry = pwd.getpwnam(run_as)
        except KeyError:
            raise UsageError(f"os_user {run_as!r} does not exist on this machine") from None
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(target, 0o700)
    if run_as is not None:
        os.chown(target, entry.pw_uid, entry.pw_gid)


def create_replica_from_primary(
    primary_conninfo: str,
    target_dir: Path,
    *,
    runner: Runner,
    tools: PgTools,
    os_user: str | None,
    slot: str | None = None,
    application_name: str | None = None,
    timeout: float | None = None,
    connect_fn: Connect = connect,
) -> ReplicaCreated:
    """pg_basebackup -R (standby.signal + primary_conninfo) into an empty directory, optionally creating a
    physical replication slot (-C -S) so the primary keeps the WAL the new standby still needs.

    application_name goes into primary_conninfo, so the primary lists the standby under that name and
    `replicas check` can match it to pg_stat_replication. The password, if any, travels to pg_basebackup in
    PGPASSWORD and to the standby in a passfile beside its directory (ops/replicas/standby_link.py)."""
    check_slot_name(slot)
    link = standby_link(primary_conninfo, target_dir, application_name)  # refusals before anything is written
    if slot:
        with connect_fn(primary_conninfo, timeout=DEFAULT_TIMEOUT) as conn:
            if slot_state(conn, slot) is not None:
                raise UsageError(
                    f"replication slot {slot!r} already exists on the primary (pg_basebackup -C creates it)",
                    hint="choose another --slot name, drop the slot, or use --from-backup; nothing was changed",
                )
    params = parse_conninfo(primary_conninfo)
    params.pop("dbname", None)  # a replication connection ignores it; -R would copy it into primary_conninfo
    if application_name:
        params["application_name"] = application_name
    conninfo = make_conninfo(params)
    run_as = os_user if os.geteuid() == 0 else None
    _prepare_target(target_dir, run_as)
    extra = ["-R"]
    if slot:
        extra += ["-C", "-S", slot]
    cmd = tools.pg_basebackup(
        conninfo,
        pgdata=str(target_dir),
        fmt="plain",
        wal="stream",
        manifest_checksums=None,
        extra=extra,
        run_as=run_as,
        timeout=timeout,
    )
    runner.run(cmd, doing=f"cloning the primary into {target_dir}")
    written = (target_dir / "standby.signal").exists()
    passfile = _password_to_passfile(link, target_dir, run_as) if written else None
    return ReplicaCreated(
        str(target_dir),
        "primary",
        slot,
        application_name,
        written,
        slot_created=slot is not None,  # pg_basebackup -C created it (it refuses an existing one)
        passfile=str(passfile) if passfile else None,
        primary_conninfo=link.primary_conninfo if passfile else None,
    )


def _password_to_passfile(link: StandbyLink, target_dir: Path, run_as: str | None) -> Path | None:
    """pg_basebackup -R copies every connection option it used into primary_conninfo, the password too
    (even one given in PGPASSWORD): replace that line by ours, which names the passfile instead."""
    if link.passfile is None:
        return None
    path = write_passfile(link, run_as)
    write_recovery(target_dir, {"primary_conninfo": link.primary_conninfo}, STANDBY_SIGNAL, os_user=run_as)
    return path


def create_replica_from_backup(
    settings: Settings,
    cluster_name: str,
    target_dir: Path,
    *,
    backup: str = "latest",
    slot: str | None = None,
    application_name: str | None = None,
    connect_fn: Connect = connect,
    on_bytes: Callable[[int], None] | None = None,
) -> ReplicaCreated:
    """A standby from the repository, through `opsdb restore --standby` (ops/recovery/restore.py): the backup
    (ID or "latest") restored into an empty directory with standby.signal, restore_command = opsdb
    wal-fetch (it catches up from the archive) and primary_conninfo = the cluster's conninfo (it then
    streams). A password goes into a passfile beside the directory, never into postgresql.auto.conf
    (ops/replicas/standby_link.py). With `slot`, a physical slot is created on the primary (or an existing idle
    one reused) before the files are restored, and dropped again if the restore fails.

    Every refusal (non-empty directory, unknown backup, bad slot) comes before anything is changed."""
    from opsdb.ops.recovery.restore import restore_from_settings

    check_slot_name(slot)
    cluster = settings.clusters[cluster_name]
    link = standby_link(cluster.conninfo, target_dir, application_name)
    backup_id = None if backup == "latest" else backup
    common: dict[str, Any] = {
        "target_dir": str(target_dir),
        "standby": True,
        "primary_conninfo": link.primary_conninfo,
        "slot": slot,
    }
    plan, _ = restore_from_settings(settings, cluster_name, backup_id=backup_id, dry_run=True, **common)
    os_user = cluster.os_user if os.geteuid() == 0 else None
    slot_created = False
    passfile = None
    try:
        if slot:
            with connect_fn(cluster.conninfo, timeout=DEFAULT_TIMEOUT) as conn:
                if not check_slot_usable(conn, slot):
                    create_slot(conn, slot)
                    slot_created = True
        passfile = write_passfile(link, os_user)
        # the plan's backup, pinned: a backup finishing meanwhile must not change what "latest" meant
        _, result = restore_from_settings(settings, cluster_name, backup_id=plan.backup.id, on_bytes=on_bytes, **common)
    except BaseException:
        remove_passfile(passfile)
        if slot_created:
            with contextlib.suppress(DatabaseError), connect_fn(cluster.conninfo, timeout=DEFAULT_TIMEOUT) as conn:
                drop_slot(conn, slot)  # type: ignore[arg-type]  # slot_created is True only when a slot was named
        raise
    assert result is not None
    return ReplicaCreated(
        str(plan.target_dir),
        f"backup:{plan.backup.id}",
        slot,
        application_name,
        (Path(plan.target_dir) / "standby.signal").exists(),
        backup_id=plan.backup.id,
        slot_created=slot_created,
        passfile=str(passfile) if passfile else None,
        primary_conninfo=link.primary_conninfo,
        bytes_read=result.bytes_read,
    )
