"""kill -9 of the WAL helper mid-push, on real clusters (once per PostgreSQL major), on file:// and S3 (moto).

A primary archives through `opsdb wal-push %p` (sync, and `[wal] async = true`: push-ahead) while a
writer switches WAL files. The helper is killed with SIGKILL each time it is seen inside a push (its
descriptors hold a segment of pg_wal, or a temp file of the file:// repository), KILLS times.
Wherever each kill lands: archiving catches up by itself with no failed archive_command (a dropped
call asks a new helper), every segment up to the last one switched is stored with exactly the bytes
of pg_wal, every `.done` has its object, and nothing but whole authenticated objects is listed (a
killed store leaves at most a temp file, never listed). The prefetch side: test_wal_helper_kill_prefetch.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.model.lsn import parse_wal_name, segment_name
from opsdb.pg.instance import CLOSE_SEGMENT_SQL, Instance
from opsdb.repo import wal as repo_wal
from opsdb.stream.crypto import load_key
from tests.integration.archiving_env import Writer, archiving_env, run
from tests.integration.test_pitr import q, v, x
from tests.integration.wal_kill_env import Repository, is_helper, kill_helper, repository_for
from tests.polling import wait_until

pytestmark = pytest.mark.integration

KILLS = 3  # helpers killed mid-push per test (each kill lands in another helper, started by the next call)
WAL_NAME = re.compile(r"^[0-9A-F]{24}$")


@pytest.fixture(params=["file", "s3"])
def repository(request: pytest.FixtureRequest) -> Repository:
    return repository_for(request)


def helper_pids(workdir: Path, config: Path) -> list[int]:
    """The WAL helpers serving under this work directory's spool (each lock file names its helper)."""
    pids = []
    for lock in (workdir / "spool").glob("*/helper/helper-*.lock"):
        try:
            text = lock.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and is_helper(int(text), config):
            pids.append(int(text))
    return pids


def open_files(pid: int) -> list[str]:
    fds = Path(f"/proc/{pid}/fd")
    out = []
    try:
        for fd in fds.iterdir():
            try:
                out.append(os.readlink(fd))
            except OSError:
                continue
    except OSError:
        pass
    return out


def pushing(pid: int, pg_wal: Path, repo_dir: Path | None) -> bool:
    """The helper is inside a push: reading a segment of pg_wal, or writing a file:// temp object."""
    for target in open_files(pid):
        path = Path(target)
        if path.parent == pg_wal and WAL_NAME.match(path.name):
            return True
        if repo_dir is not None and target.startswith(f"{repo_dir}/") and path.name.startswith(".tmp-"):
            return True
    return False


def _sha256(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _segno(name: str) -> int:
    wal = parse_wal_name(name)
    assert wal.segno is not None
    return wal.segno


def _archiver(primary: Instance) -> dict[str, Any]:
    return dict(q(primary, "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver")[0])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_kill_9_of_the_helper_mid_push_loses_nothing_and_leaves_nothing_that_looks_complete(
    pg_bin_dir: Path, repository: Repository, mode: str
) -> None:
    wal = "async = true\npush_workers = 4\n" if mode == "async" else ""
    render = lambda workdir, port: repository.config(workdir, port, wal)  # noqa: E731
    # every segment stays in pg_wal (wal_keep_size), so what was stored can be compared with it
    with archiving_env(pg_bin_dir, "opsdb-walkill-push-", render, wal_keep_size="4GB", max_wal_size="4GB") as env:
        primary, workdir, config = env["primary"], env["workdir"], env["config"]
        pg_wal = primary.data_dir / "pg_wal"
        repo_dir = workdir / "repo" if repository.kind == "file" else None
        x(primary, "CREATE TABLE t (id int primary key, note text)")
        killed: list[int] = []
        with Writer(primary, limit=120) as writer:
            deadline = time.monotonic() + 180
            while len(killed) < KILLS and time.monotonic() < deadline and not writer.errors:
                for pid in helper_pids(workdir, config):
                    if pid not in killed and pushing(pid, pg_wal, repo_dir) and kill_helper(pid, config):
                        killed.append(pid)
                time.sleep(0.005)
        assert not writer.errors, writer.errors
        assert len(killed) == KILLS, f"the helper was seen inside a push {len(killed)} times in 180 s"

        last = v(primary, CLOSE_SEGMENT_SQL)  # archiving recovers by itself up to the last segment switched
        wait_until(lambda: (_archiver(primary)["last_archived_wal"] or "") >= last, f"{last} archived", timeout=180)
        archiver = _archiver(primary)
        assert archiver["failed_count"] == 0, archiver  # each dropped call was answered by a new helper

        storage = repository.storage(workdir)
        key = load_key(key_file=workdir / "key")
        archived = {f.wal.name: f for f in repo_wal.list_archive(storage, "main")}
        assert {f.wal.kind for f in archived.values()} == {"segment"}
        # one continuous range, from the cluster's first segment to the last one switched, nothing after
        expected = [segment_name(1, n) for n in range(1, _segno(last) + 1)]
        assert sorted(archived) == expected
        for name in expected:  # each authenticated to its end, with exactly pg_wal's bytes
            stored = _sha256(repo_wal.fetch(storage, "main", name, {key.id: key}))
            assert stored == hashlib.sha256((pg_wal / name).read_bytes()).hexdigest(), name
        status = {p.name for p in (pg_wal / "archive_status").iterdir()}
        done = {n.removesuffix(".done") for n in status if n.endswith(".done")}
        assert done and done <= set(archived)  # nothing reported archived that is not stored
        assert not [n for n in status if n.endswith(".ready") and n.removesuffix(".ready") <= last]
        if repo_dir is not None:  # what a killed store left is a temp file: never listed, never complete
            on_disk = [p for p in repo_dir.rglob("*") if p.is_file() and "/wal/" in str(p)]
            objects = {p.name for p in on_disk if not p.name.startswith(".")}
            assert objects == set(archived)
            assert all(p.name.startswith((".tmp-", ".meta-")) for p in on_disk if p.name.startswith("."))
        info = json.loads(run(env, "--json", "info").stdout)  # and opsdb itself sees one range, no gap
        assert info["wal_gaps"] == [], info
        assert [(t["wal_first"], t["wal_last"]) for t in info["timelines"]] == [(expected[0], last)], info
        log = primary.log_path.read_text(errors="replace")
        assert "internal error" not in log
