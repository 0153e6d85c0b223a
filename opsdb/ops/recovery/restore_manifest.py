"""Restore checks the restored files against the backup's stored `backup_manifest` before anything starts.

The manifest object is read through the envelope (authenticated), its own SHA-256 checked, and it is
written into the data directory where pg_basebackup's plain format leaves it. Then PostgreSQL's
pg_verifybackup reads every restored file against it (names, sizes, checksums including CRC-32C),
with -n because the WAL comes from the archive during replay. Without pg_verifybackup the same
names and sizes are checked here. Tablespace files are reached through pg_tblspc/<oid> links to
their restored locations (the server re-creates those links from tablespace_map at its first start).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opsdb.errors import IntegrityError
from opsdb.model.catalog import BackupRecord
from opsdb.ops.common.backup_manifest import parse_manifest
from opsdb.pg.tools import PgTools
from opsdb.proc import Runner
from opsdb.repo import envelope, layout
from opsdb.storage.base import Storage

MANIFEST = "backup_manifest"


def check_restored_files(
    storage: Storage,
    keys: Mapping[str, Any],
    record: BackupRecord,
    target: Path,
    spaces: Mapping[int, str],
    *,
    bin_dir: Path | None,
    runner: Runner,
) -> str:
    """A one-line account of the check; IntegrityError (naming the manifest and the file) on a mismatch."""
    if record.object(MANIFEST) is None:
        return f"not checked: backup {record.id} has no {MANIFEST} (taken without a manifest)"
    key = layout.backup_object(record.cluster, record.id, MANIFEST)
    data = b"".join(envelope.get_object(storage, key, keys))
    manifest = parse_manifest(data, key)  # its own SHA-256 first: a tampered manifest proves nothing
    path = target / MANIFEST
    path.write_bytes(data)
    os.chmod(path, 0o600)
    for oid, where in spaces.items():
        link = target / "pg_tblspc" / str(oid)
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(mode=0o700, exist_ok=True)
            link.symlink_to(where)
    tool = Path(bin_dir) / "pg_verifybackup" if bin_dir is not None else None
    if tool is not None and tool.is_file():
        cmd = PgTools(tool.parent).pg_verifybackup(str(target), no_parse_wal=True, timeout=3600)
        done = runner.run(cmd, check=False, doing=f"checking the restored files against {key}")
        if done.returncode != 0:
            lines = [ln.strip() for ln in (done.stderr or done.stdout).decode("utf-8", "replace").splitlines()]
            said = " | ".join([ln for ln in lines if ln][:3]) or f"exit {done.returncode}"
            raise IntegrityError(
                f"the restored files of backup {record.id} do not match {key}: {said}",
                hint="the restore was undone and no server was started; run `opsdb verify --backup "
                f"{record.id}` and restore another backup",
            )
        return f"pg_verifybackup: every restored file matches {MANIFEST} ({len(manifest.files)} files)"
    problems = []
    for name, entry in manifest.files.items():
        size = _restored_size(target, name)
        if size != int(entry.get("Size", -1)):
            problems.append(f"{name}: " + ("missing" if size is None else f"size {size}, manifest {entry.get('Size')}"))
    if problems:
        raise IntegrityError(
            f"the restored files of backup {record.id} do not match {key}: {'; '.join(problems[:3])}",
            hint="the restore was undone and no server was started",
        )
    return f"names and sizes of {len(manifest.files)} files match {MANIFEST} (pg_verifybackup not found)"


def _restored_size(target: Path, name: str) -> int | None:
    try:
        return (target / name).stat().st_size
    except OSError:
        return None
