"""Make what a restore wrote durable before `restore` reports success.

Extraction writes through the page cache; a crash or power loss in the next seconds would leave a
directory that looks restored but holds zeroed or missing files. PostgreSQL's own tools
(pg_basebackup, pg_combinebackup, initdb, pg_rewind) therefore sync their output, with
`--sync-method fsync|syncfs` and `--no-sync`; opsdb restore offers the same choice:

  fsync   (the default, as in PostgreSQL) every regular file, then every directory (so a file's
          entry is durable in its directory) and each root's parent; SYNC_THREADS at a time. Symlinks
          are not followed: tablespace locations are roots of their own.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from opsdb.errors import OperationFailed, UsageError

SYNC_METHODS = ("fsync", "syncfs")
DEFAULT_SYNC_METHOD = "fsync"
SYNC_THREADS = 16  # fsync calls in flight

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
        regular, folders = [], []
        parents = {root.parent for root in roots}
        for root in roots:
            for base, _dirs, names in os.walk(root):
                folders.append(Path(base))
                regular += [p for p in (Path(base, n) for n in names) if p.is_file() and not p.is_symlink()]
        folders += sorted(parents)  # the roots' own entries
        # every file before any directory; several fsyncs in flight let the filesystem commit its
        # journal once for many of them (one at a time, 966 files of a fresh initdb took 2-3.5 s
        # here, 0.17 s with 16 in flight; fsync releases the GIL)
        with ThreadPoolExecutor(SYNC_THREADS) as pool:
            list(pool.map(lambda p: _sync_path(p, fsync, directory=False), regular))
            list(pool.map(lambda p: _sync_path(p, fsync, directory=True, optional=p in parents), folders))
        files, directories = len(regular), len(folders)
    else:
        raise UsageError(f"invalid sync method {method!r}: expected {' or '.join(SYNC_METHODS)}")
    return SyncReport(method, files, directories, filesystems, time.monotonic() - started)


def _sync_path(path: Path, call: SyncCall, *, directory: bool, optional: bool = False) -> None:
    """fsync one path; `optional`: a directory the restore did not make (a root's parent), which the
    restoring user may not be allowed to open (PostgreSQL's fsync_fname skips those the same way)."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
        try:
            call(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if optional and isinstance(exc, PermissionError):
            return
        raise OperationFailed(
            f"unable to sync restored {'directory' if directory else 'file'} {path}: {exc.strerror or exc}",
            hint="the restore is not durable; check the disk and restore again",
        ) from None
