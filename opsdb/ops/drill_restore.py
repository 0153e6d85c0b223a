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
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opsdb.errors import IntegrityError, NotFound, OperationFailed
from opsdb.repo import envelope, layout
from opsdb.repo import wal as walrepo
from opsdb.storage.base import Storage
from opsdb.stream.stages import IterReader

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
    ) -> None:
        self.storage = storage
        self.cluster = cluster
        self.keys = keys
        self._load_backups = load_backups
        self.os_user = os_user

    def backups(self) -> list[Any]:
        return self._load_backups()

    def _extract(self, key: str, dest: Path, on_bytes: Callable[[int], None]) -> int:
        counted = [0]

        def counting() -> Any:
            for chunk in envelope.get_object(self.storage, key, self.keys):
                counted[0] += len(chunk)
                on_bytes(len(chunk))
                yield chunk

        chunks = counting()
        reader = IterReader(chunks)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                tar.extractall(dest, filter="fully_trusted")  # our own authenticated backup, incl. symlinks
        except tarfile.TarError as exc:
            raise IntegrityError(f"object {key} is not a readable tar: {exc}") from None
        for _ in chunks:  # read to the end so the trailer (size + digest) is checked
            pass
        return counted[0]

    def fetch_extract(self, backup: Any, data_dir: Path, on_bytes: Callable[[int], None]) -> int:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        total = 0
        spaces: dict[str, Path] = {}
        for name in _object_names(backup):
            key = layout.backup_object(self.cluster, backup.id, name)
            if name == "base.tar":
                total += self._extract(key, data_dir, on_bytes)
            elif match := _TBLSPC.fullmatch(name):
                where = data_dir.parent / "tablespaces" / match.group(1)
                where.mkdir(parents=True, exist_ok=True)
                total += self._extract(key, where, on_bytes)
                spaces[match.group(1)] = where
            elif name == "pg_wal.tar":
                total += self._extract(key, data_dir / "pg_wal", on_bytes)
        if not (data_dir / "PG_VERSION").is_file():
            raise OperationFailed(f"backup {backup.id} restored no data directory (no base.tar?)")
        if spaces:
            (data_dir / "tablespace_map").write_text("".join(f"{oid} {path}\n" for oid, path in sorted(spaces.items())))
        (data_dir / "pg_wal").mkdir(exist_ok=True)
        os.chmod(data_dir, 0o700)
        _chown_tree(data_dir.parent, self.os_user)
        return total

    def stage_wal(self, names: Sequence[str], dest: Path) -> int:
        dest.mkdir(parents=True, exist_ok=True)
        total = 0
        for name in [*names, *self._histories()]:
            try:
                data = b"".join(walrepo.fetch(self.storage, self.cluster, name, self.keys))
            except NotFound:
                continue  # deleted since the plan: recovery stops there, and the drill says so
            (dest / name).write_bytes(data)
            total += len(data)
        _chown_tree(dest, self.os_user)
        return total

    def _histories(self) -> list[str]:
        prefix = layout.wal_object(self.cluster, "00000001.history").rsplit("/", 1)[0] + "/"
        return [info.key.rsplit("/", 1)[-1] for info in self.storage.list(prefix)]
