"""Make what a restore wrote durable before `restore` reports success.

Extraction writes through the page cache; a crash or power loss in the next seconds would leave a
directory that looks restored but holds zeroed or missing files. PostgreSQL's own tools
(pg_basebackup, pg_combinebackup, initdb, pg_rewind) therefore sync their output, with
`--sync-method fsync|syncfs` and `--no-sync`; opsdb restore offers the same choice:

  fsync   (the default, as in PostgreSQL) every regular file, then every directory bottom-up (so a
          file's entry is durable in its directory), then each root's parent. Symlinks are not
          followed: tablespace locations are roots of their own.
  syncfs  one syncfs(2) per filesystem the roots live on: much faster for many files, but it also
          writes back everything else dirty on those filesystems, and kernels before 5.8 do not
          report write-back errors through it (PostgreSQL's caveat, docs "recovery_init_sync_method").

Both are Linux system calls on open descriptors; the callables are parameters so a test can record
exactly which paths were synced (tests/unit/test_durable.py) without patching the os module.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opsdb.errors import OperationFailed, UsageError

SYNC_METHODS = ("fsync", "syncfs")
DEFAULT_SYNC_METHOD = "fsync"

SyncCall = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class SyncReport:
    method: str
    files: int  # regular files fsynced (0 with syncfs)
    directories: int  # directories fsynced (0 with syncfs)
    filesystems: int  # filesystems synced by syncfs (0 with fsync)
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "seconds": round(self.seconds, 3)}


def check_sync_method(method: str | None, *, no_sync: bool) -> str | None:
    """The method to use (None: do not sync); UsageError for an unknown one or for both options."""
    if no_sync and method is not None:
        raise UsageError("--no-sync and --sync-method cannot be used together", hint="choose one")
    if no_sync:
        return None
    method = method or DEFAULT_SYNC_METHOD
    if method not in SYNC_METHODS:
        raise UsageError(f"invalid --sync-method {method!r}: expected {' or '.join(SYNC_METHODS)}")
    return method


def libc_syncfs(fd: int) -> None:
    """syncfs(2) through libc (Python's os module has no syncfs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "syncfs"):
        raise UsageError("syncfs is not available on this system", hint="use --sync-method fsync")
    if libc.syncfs(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def sync_trees(
    roots: Sequence[Path], method: str, *, fsync: SyncCall = os.fsync, syncfs: SyncCall = libc_syncfs
) -> SyncReport:
    """Sync everything under `roots` (the restored data directory and tablespace locations)."""
    started = time.monotonic()
    files = directories = filesystems = 0
    if method == "syncfs":
        seen: set[int] = set()
        for root in roots:
            device = os.stat(root).st_dev
            if device not in seen:
                seen.add(device)
                _sync_path(root, syncfs, directory=True)
        filesystems = len(seen)
    elif method == "fsync":
        for root in roots:
            for base, _dirs, names in os.walk(root, topdown=False):  # children before their directory
                for name in names:
                    path = Path(base, name)
                    if path.is_file() and not path.is_symlink():
                        _sync_path(path, fsync, directory=False)
                        files += 1
                _sync_path(Path(base), fsync, directory=True)
                directories += 1
            _sync_path(root.parent, fsync, directory=True)  # the root's own entry
            directories += 1
    else:
        raise UsageError(f"invalid sync method {method!r}: expected {' or '.join(SYNC_METHODS)}")
    return SyncReport(method, files, directories, filesystems, time.monotonic() - started)


def _sync_path(path: Path, call: SyncCall, *, directory: bool) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
        try:
            call(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OperationFailed(
            f"unable to sync restored {'directory' if directory else 'file'} {path}: {exc.strerror or exc}",
            hint="the restore is not durable; check the disk and restore again",
        ) from None
