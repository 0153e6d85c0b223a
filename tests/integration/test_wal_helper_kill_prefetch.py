"""kill -9 of the WAL helper mid-prefetch, on real clusters (once per PostgreSQL major), on file:// and S3 (moto).

`opsdb restore --to-time T --start` with `[wal] prefetch = 4` replays a burst of segments; the
restored server's helper is killed with SIGKILL each time a prefetch temp file shows it fetching
ahead, PREFETCH_KILLS times. The server is promoted exactly at T (the row committed just before T is
there, the one just after is not, and every row of every segment before it) and the dead helper's
temp files were never served: its successor removed them. The push side: test_wal_helper_kill_push.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from tests.fixtures.pg import free_port, os_user
from tests.integration.archiving_env import OPSDB_HERE, archiving_env, backup, now_between, rows
from tests.integration.test_pitr import v, wait_archived, x
from tests.integration.wal_kill_env import Repository, kill_helper, repository_for

pytestmark = pytest.mark.integration

PREFETCH_KILLS = 2  # helpers killed mid-prefetch per restore
BURST = 24  # segments replayed before the target: recovery fetches them through the helper
# ~1.5 MB of poorly compressible WAL per segment: each fetch ahead has real work, so it is seen in progress
PAYLOAD = "(SELECT string_agg(md5(random()::text || s || g), '') FROM generate_series(1, 500) s)"
PREFETCH_TEMP = re.compile(r"^\.[0-9A-F]{24}\.(\d+)\.tmp")


@pytest.fixture(params=["file", "s3"])
def repository(request: pytest.FixtureRequest) -> Repository:
    return repository_for(request)


def _restore(env: dict[str, Any], dest: Path, port: int, *args: str) -> subprocess.Popen[str]:
    """`opsdb restore ... --start` as root (it hands the files to the server's user), in the background."""
    restore = ("restore", "--target-dir", str(dest), "--start", "--port", str(port), *args)
    argv = [OPSDB_HERE, "--config", str(env["config"]), "--json", *restore]
    environ = dict(os.environ, OPSDB_EXECUTABLE=env["opsdb"])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, cwd="/tmp")


def prefetching(workdir: Path) -> list[tuple[Path, int]]:
    """The prefetch temp files (.NAME.PID.tmp, written through a temp of its own: .NAME.PID.tmp.opsdb.*)
    and the pid fetching each. Scanned directly, not globbed: a temp file lives a fraction of a second."""
    out = []
    for window in _entries(workdir / "spool" / "main" / "prefetch"):
        for entry in _entries(Path(window.path)):
            match = PREFETCH_TEMP.match(entry.name)
            if match:
                out.append((Path(entry.path), int(match.group(1))))
    return out


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except OSError:
        return []


def _stop_time(log: str) -> datetime:
    """The commit time in the server's "recovery stopping before commit of transaction N, time T" line."""
    match = re.search(r"recovery stopping before commit of transaction \d+, time (\S+ \S+)", log)
    assert match, log[-3000:]
    return datetime.fromisoformat(match.group(1))


def test_kill_9_of_the_helper_mid_prefetch_reaches_exactly_the_target(pg_bin_dir: Path, repository: Repository) -> None:
    bin_dir = f'pg_bin_dir = "{pg_bin_dir}"\n'
    render = lambda workdir, port: repository.config(workdir, port, "prefetch = 4\n", bin_dir)  # noqa: E731
    with archiving_env(pg_bin_dir, "opsdb-walkill-fetch-", render) as env:
        primary, workdir, config, factory = env["primary"], env["workdir"], env["config"], env["factory"]
        x(primary, "CREATE TABLE t (id int primary key, note text)")
        backup(env)
        for n in range(BURST):  # rows in every segment: recovery must replay each to have them all
            x(primary, f"INSERT INTO t SELECT g, {PAYLOAD} FROM generate_series({n * 100 + 1}, {n * 100 + 100}) g")
            x(primary, "SELECT pg_switch_wal()")
        x(primary, "INSERT INTO t VALUES (1000001, 'the last row before the target')")
        target = now_between(primary)
        x(primary, "INSERT INTO t VALUES (1000002, 'the first row after the target')")
        for n in range(3):  # WAL past the target, so recovery stops at the target and not at the archive's end
            x(primary, f"INSERT INTO t VALUES ({2000000 + n}, 'later')")
            x(primary, "SELECT pg_switch_wal()")
        wait_archived(primary)

        dest, port = factory.new_dir() / "data", free_port()
        restored = Instance(dest, port, factory.bin_dir, os_user(), LocalRunner())
        factory._made.append((restored, dest.parent))  # stopped at the end, even when the restore fails
        proc = _restore(env, dest, port, "--to-time", target)
        killed: list[int] = []
        left_by_the_dead: list[Path] = []
        try:
            deadline = time.monotonic() + 300
            while len(killed) < PREFETCH_KILLS and proc.poll() is None and time.monotonic() < deadline:
                for _, pid in prefetching(workdir):
                    if pid not in killed and kill_helper(pid, config):
                        killed.append(pid)
                        left_by_the_dead += [p for p, owner in prefetching(workdir) if owner == pid]
                time.sleep(0.001)
            out, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert killed, "the helper was never seen fetching ahead"

        point = json.loads(out)["recovery_point"]
        assert point["state"] == "promoted" and point["timeline"] == 2, point
        assert point["time"] is not None and point["time"] <= target
        expected = [*range(1, BURST * 100 + 1), 1000001]
        assert rows(port) == expected  # every segment replayed, the last row before the target, none after
        assert v(restored, "SELECT pg_is_in_recovery()") is False
        stopped_at = _stop_time(restored.log_path.read_text(errors="replace"))
        assert stopped_at > datetime.fromisoformat(target)  # stopped at the first commit after the target
        assert not [p for p in left_by_the_dead if p.exists()]  # never served: the successor removed them
