"""ops/recovery/durable.py: which paths a restore syncs, in which order, and how failures and options read.

The sync calls are recorded by a small double that resolves each descriptor to its path through
/proc/self/fd, so the tests see exactly what would have been fsynced; the real calls run too."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from opsdb.errors import OperationFailed, UsageError
from opsdb.ops.recovery.durable import check_sync_method, libc_syncfs, sync_trees


class RecordingSync:
    """Records the path behind each descriptor, then really syncs it (or fails for `fail_on`)."""

    def __init__(self, real=os.fsync, fail_on: str | None = None, error: int = errno.EIO) -> None:  # type: ignore[no-untyped-def]
        self.paths: list[str] = []
        self.real = real
        self.fail_on, self.error = fail_on, error

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        self.paths.append(path)
        if self.fail_on is not None and path.endswith(self.fail_on):
            raise OSError(self.error, os.strerror(self.error))  # PermissionError for EACCES
        self.real(fd)


def _tree(root: Path) -> None:
    (root / "base" / "1").mkdir(parents=True)
    (root / "pg_wal" / "archive_status").mkdir(parents=True)
    (root / "PG_VERSION").write_text("15\n")
    (root / "base" / "1" / "1259").write_bytes(b"x" * 8192)
    (root / "pg_wal" / "000000010000000000000001").write_bytes(b"w" * 4096)
    (root / "pg_tblspc").mkdir()


def test_fsync_covers_every_file_then_every_directory(tmp_path: Path) -> None:
    data, space = tmp_path / "data", tmp_path / "space"
    _tree(data)
    (space / "PG_15_202209061").mkdir(parents=True)
    (space / "PG_15_202209061" / "16390").write_bytes(b"t" * 100)
    (data / "pg_tblspc" / "16400").symlink_to(space)  # not followed: the location is a root of its own
    recorder = RecordingSync()
    report = sync_trees([data, space], "fsync", fsync=recorder)

    files = sorted(str(p) for root in (data, space) for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    dirs = sorted(str(p) for root in (data, space) for p in root.rglob("*") if p.is_dir() and not p.is_symlink())
    assert sorted(p for p in recorder.paths if p in files) == files
    assert set(dirs) | {str(data), str(space), str(tmp_path)} == {p for p in recorder.paths if p not in files}
    assert str(data / "pg_tblspc" / "16400") not in recorder.paths
    assert report.method == "fsync" and report.files == len(files) == 4
    assert report.directories == len(dirs) + 2 + 1  # every directory, both roots and their (one) parent
    last_file = max(i for i, p in enumerate(recorder.paths) if p in files)
    first_directory = min(i for i, p in enumerate(recorder.paths) if p not in files)
    assert last_file < first_directory  # a directory entry is made durable after what it names


def test_syncfs_syncs_each_filesystem_once(tmp_path: Path) -> None:
    data, space = tmp_path / "data", tmp_path / "space"
    _tree(data)
    space.mkdir()
    recorder = RecordingSync(real=libc_syncfs)  # the real syncfs(2) through libc must succeed too
    report = sync_trees([data, space], "syncfs", syncfs=recorder)
    assert recorder.paths == [str(data)]  # both on one filesystem: one call
    assert (report.method, report.files, report.filesystems) == ("syncfs", 0, 1)


def test_a_failed_sync_is_an_operation_failure_naming_the_file(tmp_path: Path) -> None:
    _tree(tmp_path / "data")
    with pytest.raises(OperationFailed) as caught:
        sync_trees([tmp_path / "data"], "fsync", fsync=RecordingSync(fail_on="1259"))
    assert "unable to sync restored file" in caught.value.message and "1259" in caught.value.message
    assert "Input/output error" in caught.value.message


def test_a_parent_the_user_may_not_open_is_skipped_but_not_a_restored_directory(tmp_path: Path) -> None:
    _tree(tmp_path / "data")
    report = sync_trees([tmp_path / "data"], "fsync", fsync=RecordingSync(fail_on=tmp_path.name, error=errno.EACCES))
    assert report.files == 3
    with pytest.raises(OperationFailed, match="unable to sync restored directory .*archive_status: Permission denied"):
        sync_trees([tmp_path / "data"], "fsync", fsync=RecordingSync(fail_on="archive_status", error=errno.EACCES))


def test_options() -> None:
    assert check_sync_method(None, no_sync=False) == "fsync"
    assert check_sync_method("syncfs", no_sync=False) == "syncfs"
    assert check_sync_method(None, no_sync=True) is None
    with pytest.raises(UsageError, match="cannot be used together"):
        check_sync_method("fsync", no_sync=True)
    with pytest.raises(UsageError, match="invalid --sync-method 'fdatasync'"):
        check_sync_method("fdatasync", no_sync=False)
    with pytest.raises(UsageError, match="invalid sync method"):
        sync_trees([], "never")
