"""opsdb restore refusals and details, on a file:// repository (gzip, unencrypted):

non-empty target, a running server's directory, a tablespace location in use: exit 2, nothing
changed; a tampered object: the restore fails and removes what it extracted; default = latest;
the restored files are synced (fsync of each, syncfs per filesystem) unless --no-sync."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from tests.fixtures.pg import free_port, make_temp_dir, os_user
from tests.integration.backup_env import make_tables, opsdb, opsdb_json, table_checksums, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(pg_cluster: Instance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    space = make_temp_dir("opsdb-ts-")
    with connect(pg_cluster.conninfo()) as c:
        c.execute(f"CREATE TABLESPACE extra LOCATION '{space}'")
    make_tables(pg_cluster.conninfo(), tablespace="extra", rows=2000)
    work = tmp_path_factory.mktemp("restore")
    repo = work / "repo"
    config = write_config(
        work, url=f"file://{repo}", conninfo=pg_cluster.conninfo(), encrypted=False, compression="gzip"
    )
    first = opsdb_json(config, "backup")
    with connect(pg_cluster.conninfo()) as c:
        c.execute("INSERT INTO orders (id, note) VALUES (999999, 'after the first backup')")
    second = opsdb_json(config, "backup")
    try:
        yield {"config": config, "repo": repo, "space": space, "instance": pg_cluster, "first": first, "second": second}
    finally:
        pg_cluster.stop()
        shutil.rmtree(space, ignore_errors=True)


def _snapshot(path: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


def test_non_empty_target_is_refused_and_left_alone(env: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    before = _snapshot(target)
    proc = opsdb(
        env["config"],
        "restore",
        "--target-dir",
        str(target),
        "--tablespace-map",
        f"extra={tmp_path / 'ts'}",
        check=False,
    )
    assert proc.returncode == 2 and "not empty" in proc.stderr and "nothing was changed" in proc.stderr
    assert _snapshot(target) == before and not (tmp_path / "ts").exists()


def test_running_server_directory_is_refused(env: dict[str, Any], tmp_path: Path) -> None:
    data = env["instance"].data_dir
    before = sorted(os.listdir(data))
    proc = opsdb(
        env["config"], "restore", "--target-dir", str(data), "--tablespace-map", f"extra={tmp_path / 'ts'}", check=False
    )
    assert proc.returncode == 2 and "is running there" in proc.stderr
    assert sorted(os.listdir(data)) == before


def test_tablespace_location_in_use_is_refused(env: dict[str, Any], tmp_path: Path) -> None:
    proc = opsdb(env["config"], "restore", "--target-dir", str(tmp_path / "t"), check=False)
    assert proc.returncode == 2 and "--tablespace-map" in proc.stderr
    assert not (tmp_path / "t").exists()
    bad = opsdb(
        env["config"], "restore", "--target-dir", str(tmp_path / "t"), "--tablespace-map", "/nope=/x", check=False
    )
    assert bad.returncode == 2 and "no such tablespace" in bad.stderr


def test_dry_run_writes_nothing(env: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "dry"
    proc = opsdb(
        env["config"],
        "restore",
        "--target-dir",
        str(target),
        "--tablespace-map",
        f"{env['space']}={tmp_path / 'ts'}",
        "--dry-run",
    )
    assert "extract   base.tar" in proc.stdout and "read" in proc.stdout
    assert not target.exists() and not (tmp_path / "ts").exists()


def test_tampered_object_fails_and_removes_what_it_wrote(env: dict[str, Any], tmp_path: Path) -> None:
    backup_dir = env["repo"] / "clusters" / "main" / "backups" / env["first"]["id"]
    copy = tmp_path / "base.tar.orig"
    shutil.copy2(backup_dir / "base.tar", copy)
    try:
        with open(backup_dir / "base.tar", "r+b") as fh:
            fh.seek(-300, os.SEEK_END)
            byte = fh.read(1)
            fh.seek(-300, os.SEEK_END)
            fh.write(bytes([byte[0] ^ 0xFF]))
        target = tmp_path / "t"
        proc = opsdb(
            env["config"],
            "restore",
            "--target-dir",
            str(target),
            "--backup",
            env["first"]["id"],
            "--tablespace-map",
            f"extra={tmp_path / 'ts'}",
            check=False,
        )
        assert proc.returncode == 1 and "base.tar" in proc.stderr
        assert not target.exists() and not (tmp_path / "ts").exists()
    finally:
        shutil.copy2(copy, backup_dir / "base.tar")


def test_default_is_the_latest_backup_and_it_starts(env: dict[str, Any]) -> None:
    base = make_temp_dir("opsdb-restore-")
    target = base / "data"
    port = free_port()
    restored = Instance(target, port, env["instance"].tools.bin_dir, os_user(), LocalRunner())
    try:
        result = opsdb_json(
            env["config"],
            "restore",
            "--target-dir",
            str(target),
            "--tablespace-map",
            f"extra={base / 'ts'}",
            "--start",
            "--port",
            str(port),
        )
        assert result["backup_id"] == env["second"]["id"] and result["target"] == "immediate"
        assert table_checksums(restored.conninfo(), ["orders", "customers", "archived"]) == table_checksums(
            env["instance"].conninfo(), ["orders", "customers", "archived"]
        )
        if os.geteuid() == 0:
            assert target.stat().st_uid == (base / "ts").stat().st_uid != 0
    finally:
        restored.stop()
        shutil.rmtree(base, ignore_errors=True)


def _regular_files(*roots: Path) -> int:
    return sum(1 for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_restore_syncs_every_restored_file_unless_no_sync(env: dict[str, Any], tmp_path: Path) -> None:
    runs = {"fsync": (), "syncfs": ("--sync-method", "syncfs"), "none": ("--no-sync",)}
    for name, options in runs.items():
        target, space = tmp_path / name / "data", tmp_path / name / "ts"
        result = opsdb_json(
            env["config"], "restore", "--target-dir", str(target), "--tablespace-map", f"extra={space}", *options
        )
        again = tmp_path / name / "text"  # the same restore, for the human line
        human = opsdb(
            env["config"],
            "restore",
            "--target-dir",
            str(again / "data"),
            "--tablespace-map",
            f"extra={again / 'ts'}",
            *options,
        ).stdout
        if name == "none":
            assert result["synced"] is False and result["sync"] is None and "not synced (--no-sync)" in human
            continue
        assert result["synced"] is True and result["sync"]["method"] == name and f"synced ({name}," in human
        if name == "fsync":  # every file the restore wrote, in the data directory and the tablespace
            assert result["sync"]["files"] == _regular_files(target, space) > 100
            assert result["sync"]["directories"] > 10
        else:
            assert (result["sync"]["files"], result["sync"]["filesystems"]) == (0, 1)


def test_sync_options_are_checked_before_anything_is_written(env: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "t"
    for options, message in (
        (("--no-sync", "--sync-method", "syncfs"), "--no-sync and --sync-method cannot be used together"),
        (("--sync-method", "fdatasync"), "invalid --sync-method 'fdatasync': expected fsync or syncfs"),
    ):
        proc = opsdb(env["config"], "restore", "--target-dir", str(target), *options, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
        assert not target.exists()
