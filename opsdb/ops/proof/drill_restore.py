"""The drill's restore side: read a backup's tar objects from the repository and unpack them, and
stage archived WAL for scratch servers that cannot run `opsdb wal-fetch` themselves.

Tars are streamed (authenticated chunk by chunk) straight into tarfile: nothing is staged on disk
but the extracted files. Tablespace tars (`pg_tblspc-<oid>.tar` or `<oid>.tar`) are unpacked
beside the data directory and tablespace_map is rewritten to point there, so a drill never
touches the production tablespace paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opsdb.errors import NotFound, OperationFailed
from opsdb.ops.recovery.extract import extract_object
from opsdb.pg import walpage
from opsdb.repo import envelope, layout
from opsdb.repo import wal as walrepo
from opsdb.storage.base import Storage

_TBLSPC = re.compile(r"(?:pg_tblspc-)?(\d+)\.tar$")


def _chown_tree(root: Path, os_user: str | None) -> None:
    if os_user is None or os.geteuid() != 0:
        return
    import pwd

    entry = pwd.getpwnam(os_user)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), entry.pw_uid, entry.pw_gid)


def _object_names(record: Any) -> list[str]:
    names = []
    for obj in getattr(record, "objects", None) or []:
        name = obj.get("name") if isinstance(obj, Mapping) else getattr(obj, "name", None)
        if name:
            names.append(name)
    return names or ["base.tar"]


class RepositoryRestorer:
    """Restorer for run_drill over a repository: the catalog comes from `load_backups`."""

    def __init__(
        self,
        storage: Storage,
        cluster: str,
        keys: Mapping[str, Any],
        load_backups: Callable[[], list[Any]],
        os_user: str | None = None,
        bin_dir: Path | None = None,  # pg_combinebackup for incremental backups (else the backup's major's)
    ) -> None:
        self.bin_dir = bin_dir
        self.storage = storage
        self.cluster = cluster
        self.keys = keys
        self._load_backups = load_backups
        self.os_user = os_user

    def backups(self) -> list[Any]:
        return self._load_backups()

    def fetch_extract(self, backup: Any, data_dir: Path, on_bytes: Callable[[int], None]) -> int:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        total = 0
        if getattr(backup, "parent", None):  # an incremental: its chain, combined (ops/recovery/restore_chain.py)
            from opsdb.ops.recovery.restore_chain import restore_chain_into
            from opsdb.proc import LocalRunner

            total = restore_chain_into(
                self.storage, self.keys, backup, data_dir, runner=LocalRunner(), bin_dir=self.bin_dir, on_bytes=on_bytes
            )
        for name in _object_names(backup) if not total else ():
            key = layout.backup_object(self.cluster, backup.id, name)
            if name == "base.tar":
                total += extract_object(self.storage, key, self.keys, data_dir, on_bytes=on_bytes)
            elif match := _TBLSPC.fullmatch(name):
                # unpacked beside the data directory; pg_tblspc/<oid> points there (pg_verifybackup
                # follows it), and the drill drops tablespace_map so the server keeps these links
                where = data_dir.parent / "tablespaces" / match.group(1)
                where.mkdir(parents=True, exist_ok=True)
                total += extract_object(self.storage, key, self.keys, where, on_bytes=on_bytes)
                link = data_dir / "pg_tblspc" / match.group(1)
                link.parent.mkdir(exist_ok=True)
                link.unlink(missing_ok=True)
                link.symlink_to(where)
            elif name == "pg_wal.tar":
                total += extract_object(self.storage, key, self.keys, data_dir / "pg_wal", on_bytes=on_bytes)
            elif name == "backup_manifest":  # PostgreSQL's manifest, for pg_verifybackup
                data = b"".join(envelope.get_object(self.storage, key, self.keys))
                (data_dir / "backup_manifest").write_bytes(data)
                total += len(data)
                on_bytes(len(data))
        if not (data_dir / "PG_VERSION").is_file():
            raise OperationFailed(f"backup {backup.id} restored no data directory (no base.tar?)")
        (data_dir / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        _chown_tree(data_dir.parent, self.os_user)
        return total

    def stage_wal(self, names: Sequence[str], dest: Path) -> int:
        dest.mkdir(parents=True, exist_ok=True)
        total = 0
        for name in [*names, *self._histories()]:
            try:
                total += self._fetch_into(name, dest / name)
            except NotFound:
                continue  # deleted since the plan: recovery stops there, and the drill says so
        _chown_tree(dest, self.os_user)
        return total

    def _fetch_into(self, name: str, path: Path) -> int:
        """Stream one authenticated WAL file to path (written under a temp name, renamed when complete)."""
        tmp = path.with_name(f".{path.name}.tmp")
        size = 0
        content = walpage.ContentCheck(name, layout.wal_object(self.cluster, name))  # as wal-fetch checks it
        try:
            with open(tmp, "wb") as fh:
                for chunk in walrepo.fetch(self.storage, self.cluster, name, self.keys):
                    content.feed(chunk)
                    fh.write(chunk)
                    size += len(chunk)
            content.finish()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    def _histories(self) -> list[str]:
        prefix = layout.wal_object(self.cluster, "00000001.history").rsplit("/", 1)[0] + "/"
        return [info.key.rsplit("/", 1)[-1] for info in self.storage.list(prefix)]
