"""Full spools on a real archiving primary: [wal] async = true and prefetch = 4 with spool_dir on a
small tmpfs that is then filled up. Archiving goes on (the helper's pushes keep nothing in the spool
but its socket and lock) and recovery goes on without the prefetch spool (direct fetches), each call
warning with the spool's path; no internal error, no aborted recovery.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.model.lsn import parse_wal_name, segment_name
from opsdb.ops.wal.spool import stop_helpers
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from opsdb.repo import wal as repo_wal
from opsdb.storage.local import LocalStorage
from opsdb.stream.crypto import generate_key_file, load_key
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.gate import missing
from tests.integration.archiving_env import archiving_primary, backup, config_text, rows, run
from tests.integration.test_pitr import _opsdb_for_server, v, wait_archived, x

pytestmark = pytest.mark.integration
SPOOL_MB = 12  # less than one 16 MiB segment: a prefetched segment can never fit


def _mount_tmpfs(path: Path, megabytes: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    user = os_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _fill(path: Path) -> None:
    """Write until the file system is full (ENOSPC ends it), leaving no free block."""
    with open(path / "filler", "wb", buffering=0) as fh:  # unbuffered: nothing left to flush at close
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass


@pytest.fixture(scope="module")
def env(pg_bin_dir: Path) -> Iterator[dict[str, Any]]:
    opsdb = _opsdb_for_server()
    factory = ClusterFactory(pg_bin_dir)
    workdir = make_temp_dir("opsdb-spoolfull-")
    spool = workdir / "spool"
    _mount_tmpfs(spool, SPOOL_MB)
    try:
        generate_key_file(workdir / "key")
        (workdir / "repo").mkdir()
        config = workdir / "opsdb.toml"
        wal, cluster = "async = true\nprefetch = 4\n", f'pg_bin_dir = "{pg_bin_dir}"\n'
        render = lambda port: config_text(workdir, port, wal=wal, cluster=cluster)  # noqa: E731
        primary = archiving_primary(factory, opsdb, config, render)
        key = load_key(key_file=workdir / "key")
        yield {
            "opsdb": opsdb,
            "config": config,
            "workdir": workdir,
            "spool": spool,
            "primary": primary,
            "factory": factory,
            "storage": LocalStorage(str(workdir / "repo")),
            "keys": {key.id: key},
        }
    finally:
        factory.close()  # stops the servers (and with them the helpers' work) before the unmount
        stop_helpers(str(spool))  # the WAL helpers our servers started
        for _ in range(50):  # bounded: a helper may take a moment to exit
            if subprocess.run(["umount", str(spool)], capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.2)
        shutil.rmtree(workdir, ignore_errors=True)


def test_archiving_and_recovery_go_on_with_full_spools(env: dict[str, Any]) -> None:
    primary = env["primary"]
    x(primary, "CREATE TABLE t (id int primary key, note text)")
    backup(env)
    x(primary, "INSERT INTO t VALUES (1, 'through the async helper')")
    wait_archived(primary)  # the spool's directories exist and the helper has worked
    _fill(env["spool"])

    x(primary, "INSERT INTO t SELECT g, 'with the spool full' FROM generate_series(2, 2000) g")
    for _ in range(3):
        wait_archived(primary)  # pushes need no room in the spool: archiving never stops
    failed = v(primary, "SELECT failed_count FROM pg_stat_archiver")
    assert failed == 0
    log = primary.log_path.read_text(errors="replace")
    assert "internal error" not in log
    names = {f.wal.name for f in repo_wal.list_archive(env["storage"], "main")}
    last = v(primary, "SELECT last_archived_wal FROM pg_stat_archiver")
    assert last in names

    # a restore replays through wal-fetch with prefetch = 4 into the same full spool
    factory = env["factory"]
    dest = factory.new_dir() / "data"
    port = free_port()
    restored = Instance(dest, port, factory.bin_dir, os_user(), LocalRunner())
    factory._made.append((restored, dest.parent))
    doc = json.loads(
        run(env, "--json", "restore", "--target-dir", str(dest), "--start", "--port", str(port), as_root=True).stdout
    )
    assert doc["recovery_point"] is not None and len(rows(port)) == 2000
    recovery_log = restored.log_path.read_text(errors="replace")
    assert "the prefetch spool cannot" in recovery_log and str(env["spool"]) in recovery_log
    assert "fetching" in recovery_log and "directly from the repository" in recovery_log
    assert "internal error" not in recovery_log


def test_a_prefetch_spool_too_small_for_a_segment_falls_back_to_a_direct_fetch(env: dict[str, Any]) -> None:
    """Room for small files but not for a segment: the call whose segment could not be fetched ahead
    fetches it directly, and its warning names the spool."""
    (env["spool"] / "filler").unlink(missing_ok=True)
    x(env["primary"], "CREATE TABLE IF NOT EXISTS small_spool (n int)")
    for _ in range(3):  # segments of this test's own, whether or not the other test ran before it
        x(env["primary"], "INSERT INTO small_spool VALUES (1)")
        x(env["primary"], "SELECT pg_switch_wal()")
    wait_archived(env["primary"])
    last = parse_wal_name(v(env["primary"], "SELECT last_archived_wal FROM pg_stat_archiver"))
    assert last.segno is not None and last.segno >= 2
    first, second = (segment_name(last.timeline, last.segno - n) for n in (2, 1))
    pgdata = env["factory"].new_dir()  # wal-fetch runs in the data directory being recovered (its cwd)
    user = os_user()

    def fetch(name: str) -> subprocess.CompletedProcess[str]:
        argv = [env["opsdb"], "--config", str(env["config"]), "wal-fetch", name, str(pgdata / "RECOVERYXLOG")]
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=str(pgdata))

    done = fetch(first)  # fetched directly; the helper tries to fetch `second` ahead, into too small a spool
    assert done.returncode == 0, done.stderr
    done = fetch(second)
    assert done.returncode == 0, done.stderr
    assert (pgdata / "RECOVERYXLOG").stat().st_size == 16 * 1024 * 1024
    assert f"the prefetch spool cannot hold {second}: No space left on device" in done.stderr
    assert str(env["spool"]) in done.stderr and "directly from the repository" in done.stderr
