"""Restoring an incremental backup: its whole chain, combined by pg_combinebackup into the target.

An incremental backup (kind "incremental", ops/backup/incremental.py) holds only the blocks changed
since its parent; restoring it needs every backup down to a full one. The plan (plan_restore with
`chain_steps`) resolves and checks the chain before anything is written: each member must be in the
catalog, of the same cluster and server, with its base.tar and backup_manifest present in the
repository at their recorded sizes; the first missing or damaged member is named. execute then:

  1. extracts every member (base.tar, pg_wal.tar, backup_manifest) into <staging>/<id>/: each object is
     authenticated and its digest checked as it streams (ops/recovery/extract.py), so a damaged object stops the
     restore here, with the target still untouched;
  2. runs `pg_combinebackup -o TARGET FULL INC1 ... INCn`, which writes the reconstructed data
     directory (PostgreSQL's own reconstruction: every block from the newest backup that has it);
  3. removes the staging directory (also on failure).

After that the target is restored like the newest member, a full backup taken at its time: the same
recovery settings, PITR targets, standby mode, drill checks.

Staging space: the plaintext size of every member; the plan shows it. Members with user tablespaces
are refused (pg_combinebackup finds tablespaces through pg_tblspc symlinks, which tar-format backups
replace with a tablespace_map; not handled yet).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opsdb.errors import IntegrityError, NotFound, OperationFailed, UsageError
from opsdb.model.catalog import BASE_OBJECT, MANIFEST_OBJECT, BackupRecord, RestoreStep
from opsdb.ops.recovery.extract import extract_object
from opsdb.pg.tools import PgTools, find_bin_dir
from opsdb.proc import Cmd, Runner
from opsdb.repo import catalog, envelope, layout
from opsdb.storage.base import Storage

MAX_CHAIN = 1000  # bounds the walk up the parents (a cycle is impossible by id order, but be sure)
STAGING_PREFIX = "opsdb-combine-"
_STAGED = (BASE_OBJECT, "pg_wal.tar")


def resolve_chain(storage: Storage, cluster: str, record: BackupRecord, keys: Mapping[str, Any]) -> list[BackupRecord]:
    """[full, incremental, ..., record]: the backups a restore of `record` needs, oldest first.

    Raises IntegrityError naming the first member that is missing or unusable."""
    chain = [record]
    while (parent_id := chain[-1].parent) is not None:
        child = chain[-1]
        if len(chain) > MAX_CHAIN:
            raise IntegrityError(f"the chain of backup {record.id} is longer than {MAX_CHAIN} backups")
        try:
            parent = catalog.load_backup(storage, cluster, parent_id, keys)
        except NotFound:
            raise IntegrityError(
                f"backup {record.id} cannot be restored: its chain member {child.parent} (parent of {child.id}) "
                "is missing from the catalog"
            ) from None
        if not parent.is_physical or parent.id >= child.id:
            raise IntegrityError(f"backup {child.id} names {parent.id} as its parent, which is not an earlier backup")
        if parent.system_identifier and child.system_identifier and parent.system_identifier != child.system_identifier:
            raise IntegrityError(f"backup {child.id} and its parent {parent.id} are of different servers")
        chain.append(parent)
    chain.reverse()
    for member in chain:
        check_member(storage, cluster, member, record.id)
    return chain


def check_member(storage: Storage, cluster: str, member: BackupRecord, restoring: str) -> None:
    """Every object a restore reads from `member` is in the repository at its recorded stored size."""
    if member.tablespaces:
        raise UsageError(
            f"backup {restoring} cannot be restored: chain member {member.id} has user tablespaces, which "
            "opsdb does not combine yet",
            hint="restore a full backup of this cluster",
        )
    for name in (*_STAGED, MANIFEST_OBJECT):
        obj = member.object(name)
        if obj is None:
            if name == BASE_OBJECT or name == MANIFEST_OBJECT:
                raise IntegrityError(f"backup {restoring} cannot be restored: chain member {member.id} lists no {name}")
            continue
        key = layout.backup_object(cluster, member.id, name)
        info = storage.stat(key)
        if info is None:
            raise IntegrityError(
                f"backup {restoring} cannot be restored: chain member {member.id} is damaged ({name} is missing)"
            )
        if info.size != obj.stored_size:
            raise IntegrityError(
                f"backup {restoring} cannot be restored: chain member {member.id} is damaged "
                f"({name} is {info.size} bytes, the catalog recorded {obj.stored_size})"
            )


def chain_plan(
    storage: Storage, cluster: str, record: BackupRecord, keys: Mapping[str, Any], target: Path
) -> tuple[tuple[str, ...], list[RestoreStep], str]:
    """(chain ids, full first; the extract steps; the staging directory pattern) for plan_restore.
    Each member's tars go into <staging>/<id>/ (pg_wal.tar into its pg_wal/)."""
    chain = resolve_chain(storage, cluster, record, keys)
    staging = target.parent / f"{STAGING_PREFIX}{target.name}-*"
    steps = []
    for member in chain:
        for name in _STAGED:
            obj = member.object(name)
            if obj is None:
                continue
            dest = staging / member.id / ("pg_wal" if name == "pg_wal.tar" else "")
            steps.append(RestoreStep(name, str(dest).rstrip("/"), obj.stored_size, obj.size, member.id))
    return tuple(m.id for m in chain), steps, str(staging)


def stage_and_combine(
    storage: Storage,
    keys: Mapping[str, Any],
    cluster: str,
    chain: tuple[str, ...],
    steps: Sequence[RestoreStep],
    target: Path,
    *,
    runner: Runner,
    bin_dir: Path | None = None,
    major: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Extract every member (chain_plan's steps) into a staging directory beside the target, then
    pg_combinebackup into the (empty) target. Returns the plaintext bytes read. The staging directory
    is removed in every case. pg_combinebackup comes from bin_dir, else find_bin_dir for `major`."""
    if bin_dir is None:
        bin_dir = find_bin_dir(None, major)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=target.parent))
    total = 0
    try:
        members: list[Path] = []
        for member_id in chain:
            directory = staging / member_id
            directory.mkdir(mode=0o700)
            members.append(directory)
            key = layout.backup_object(cluster, member_id, MANIFEST_OBJECT)
            with open(directory / MANIFEST_OBJECT, "wb") as fh:
                for chunk in envelope.get_object(storage, key, keys):
                    fh.write(chunk)
                    total += len(chunk)
        for step in steps:
            dest = staging / str(step.backup_id) / ("pg_wal" if step.object == "pg_wal.tar" else "")
            dest.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = layout.backup_object(cluster, str(step.backup_id), step.object)
            try:
                total += extract_object(storage, key, keys, dest, on_bytes=on_bytes)
            except IntegrityError as exc:
                raise IntegrityError(
                    f"chain member {step.backup_id} is damaged: {exc.message}; nothing was written to {target}"
                ) from None
        combine(runner, bin_dir, members, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return total


def restore_chain_into(
    storage: Storage,
    keys: Mapping[str, Any],
    record: BackupRecord,
    target: Path,
    *,
    runner: Runner,
    bin_dir: Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Resolve, check, stage and combine the chain of `record` into `target` in one call (drills)."""
    chain, steps, _ = chain_plan(storage, record.cluster, record, keys, target)
    major = (record.pg_version_num or 0) // 10000 or None
    return stage_and_combine(
        storage,
        keys,
        record.cluster,
        chain,
        steps,
        target,
        runner=runner,
        bin_dir=bin_dir,
        major=major,
        on_bytes=on_bytes,
    )


def combine(runner: Runner, bin_dir: Path, members: list[Path], target: Path) -> None:
    """pg_combinebackup -o TARGET FULL ... NEWEST. It wants to create the output directory itself."""
    with contextlib.suppress(OSError):
        target.rmdir()  # made empty by the restore; pg_combinebackup creates it (0700)
    argv = (PgTools(bin_dir).path("pg_combinebackup"), "--no-sync", "-o", str(target), *map(str, members))
    done = runner.run(Cmd(argv, timeout=None), check=False, doing=f"combining {len(members)} backups")
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
        raise OperationFailed(f"pg_combinebackup failed while combining the chain into {target}: {message}")
    if not target.is_dir():
        os.makedirs(target, mode=0o700, exist_ok=True)
        raise OperationFailed(f"pg_combinebackup wrote no data directory at {target}")


def check_combined(target: Path, *, runner: Runner, bin_dir: Path | None = None, major: int | None = None) -> str:
    """The combined data directory against the backup_manifest pg_combinebackup wrote for it (the stored
    manifests describe the members, which every extract already checked): pg_verifybackup -n."""
    tools = PgTools(bin_dir if bin_dir is not None else find_bin_dir(None, major))
    cmd = tools.pg_verifybackup(str(target), no_parse_wal=True, timeout=3600)
    done = runner.run(cmd, check=False, doing=f"checking the combined files in {target}")
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).decode("utf-8", "replace").splitlines()]
        said = " | ".join([ln for ln in lines if ln][:3]) or f"exit {done.returncode}"
        raise IntegrityError(
            f"the combined data directory {target} does not match the manifest pg_combinebackup wrote: {said}",
            hint="the restore was undone and no server was started",
        )
    return f"pg_verifybackup: every combined file matches the manifest pg_combinebackup wrote ({MANIFEST_OBJECT})"
