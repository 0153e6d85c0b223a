"""Restore drills against a real primary, its archived WAL and a moto S3 (and a file://) repository."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opsdb.model.report import DrillReport
from opsdb.ops.proof.drill import DrillRequest, run_drill
from opsdb.ops.proof.drill_checks import Assertion
from opsdb.ops.proof.drill_restore import RepositoryRestorer
from opsdb.ops.proof.scratch import LocalScratch
from opsdb.ops.proof.verify import verify_repository
from opsdb.proc import LocalRunner
from opsdb.repo import layout
from opsdb.storage import open_storage
from opsdb.storage.local import LocalStorage
from tests.integration.drill_env import KEYS, copy_repository, flip_byte, make_primary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(
    pg_bin_dir: Path, moto_endpoint: str, s3_url: str, tmp_path_factory: pytest.TempPathFactory, pg_major: int
) -> Any:
    from tests.fixtures.pg import ClusterFactory

    s3_url = f"{s3_url}-pg{pg_major}"  # the module runs once per major; the bucket is shared
    factory = ClusterFactory(pg_bin_dir)
    repo_dir = tmp_path_factory.mktemp("repo")
    s3 = open_storage(s3_url, endpoint_url=moto_endpoint)
    local = LocalStorage(repo_dir)
    try:
        primary = make_primary(factory, [s3, local])
        primary.run("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        primary.run("INSERT INTO orders SELECT g, 'row ' || g FROM generate_series(1, 5000) g")
        primary.switch_and_push()
        backup = primary.backup()
        primary.switch_and_push()
        beats = []
        for _ in range(3):
            beats.append(primary.heartbeat())
            primary.run(
                "INSERT INTO orders SELECT g, 'later' FROM generate_series((SELECT max(id) + 1 FROM orders), (SELECT max(id) + 100 FROM orders)) g"
            )
            # S3 LastModified has 1-second resolution and the recoverable window ends at the newest segment's
            # upload time, so upload in a later second than the heartbeat (the window is conservative by < 1 s)
            _sleep(1.0)
            primary.switch_and_push()
            _sleep(1.2)
        yield {
            "primary": primary,
            "backup": backup,
            "beats": beats,
            "s3": s3,
            "local": local,
            "repo_dir": repo_dir,
            "bin_dir": pg_bin_dir,
            "tmp": tmp_path_factory,
        }
    finally:
        factory.close()


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def drill(
    env: Any, storage: Any, *, kind: str = "time", to_time: Any = None, keep: bool = False, **extra: Any
) -> DrillReport:
    runner = LocalRunner()
    user = "postgres" if os.geteuid() == 0 else None
    restorer = RepositoryRestorer(storage, "main", KEYS, lambda: [env["backup"]], os_user=user)
    request = DrillRequest(
        cluster="main",
        target_kind=kind,
        to_time=to_time,
        keep=keep,
        primary_conninfo=env["primary"].conninfo,
        os_user=user,
        timeout=120,
        **extra,
    )
    scratch = LocalScratch(env["bin_dir"], user, runner)
    return run_drill(
        request, storage=storage, keys=KEYS, restorer=restorer, scratch=scratch, bin_dir=env["bin_dir"], runner=runner
    )


def test_drill_between_two_heartbeats_passes_with_rpo_from_them(env: Any) -> None:
    h1, h2, h3 = env["beats"]
    target = h2.time + (h3.time - h2.time) / 2
    wal_before = sorted(i.key for i in env["s3"].list(layout.wal_prefix("main")))
    report = drill(
        env,
        env["s3"],
        to_time=target,
        assertions=(Assertion("orders present", "postgres", "select count(*) >= 5000 from orders", "t"),),
    )
    assert report.passed, [c for c in report.checks if not c.passed]
    assert report.recovered_time == h2.time
    assert report.rpo_seconds == pytest.approx((target - h2.time).total_seconds(), abs=0.001)
    assert 0 < report.rpo_seconds < (h3.time - h2.time).total_seconds()
    names = [c.name for c in report.checks]
    for name in (
        "WAL coverage",
        "pg_verifybackup",
        "target reached and promoted",
        "recovery point",
        "pg_amcheck",
        "row counts",
        "assertion: orders present",
    ):
        assert name in names
    assert report.rto_seconds == pytest.approx(sum(report.phases.values()), abs=0.01)
    assert set(report.phases) == {"plan", "fetch_extract", "wal_replay", "checks"} and report.bytes_read > 0
    assert report.recovery_point.timeline == 2
    # the promoted scratch server archived nothing into the repository (no timeline 2 history)
    assert sorted(i.key for i in env["s3"].list(layout.wal_prefix("main"))) == wal_before


def test_drill_to_latest_reaches_the_newest_archived_heartbeat(env: Any) -> None:
    report = drill(env, env["local"], kind="latest")
    assert report.passed, [c for c in report.checks if not c.passed]
    assert report.recovered_time == env["beats"][-1].time
    assert report.rpo_seconds is not None and report.rpo_seconds > 0


def test_scratch_never_archives_and_is_removed(env: Any) -> None:
    h1, h2, _ = env["beats"]
    report = drill(env, env["local"], to_time=h2.time + timedelta(milliseconds=500), keep=True)
    workdir = Path(report.environment["scratch_dir"])
    try:
        assert report.passed
        conf = (workdir / "data" / "postgresql.auto.conf").read_text()
        assert "archive_mode = 'off'" in conf
        assert not list(env["local"].list(layout.wal_object("main", "00000002.history")))
    finally:
        LocalScratch(env["bin_dir"], "postgres", LocalRunner())._instance(
            __import__("opsdb.ops.proof.scratch", fromlist=["ScratchSpace"]).ScratchSpace(workdir, 0, "local")
        ).stop(mode="immediate")
        shutil.rmtree(workdir, ignore_errors=True)
    assert not workdir.exists()


def test_drill_fails_when_a_needed_wal_segment_was_deleted(env: Any) -> None:
    h1, h2, h3 = env["beats"]
    repo = env["tmp"].mktemp("repo-wal-deleted") / "r"
    copy_repository(env["repo_dir"], repo)
    storage = LocalStorage(repo)
    segment = env["primary"].sql("SELECT pg_walfile_name(%s::pg_lsn)", (h2.lsn,))
    (repo / layout.wal_object("main", segment)).unlink()
    report = drill(env, storage, to_time=h2.time + (h3.time - h2.time) / 2)
    assert not report.passed
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert "WAL coverage" in failed and segment in failed["WAL coverage"]
    assert "target reached and promoted" in failed
    assert not Path(report.environment["scratch_dir"]).exists()  # torn down even on failure


def test_drill_fails_when_a_backup_object_was_altered(env: Any) -> None:
    repo = env["tmp"].mktemp("repo-backup-altered") / "r"
    copy_repository(env["repo_dir"], repo)
    key = layout.backup_object("main", env["backup"].id, "base.tar")
    flip_byte(repo / key, offset=os.path.getsize(repo / key) // 2)
    report = drill(env, LocalStorage(repo), kind="latest")
    assert not report.passed
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert "drill completed" in failed and key in failed["drill completed"]
    assert not Path(report.environment["scratch_dir"]).exists()


def test_verify_names_a_flipped_byte_in_a_backup_object_and_in_a_wal_object(env: Any) -> None:
    assert verify_repository(env["s3"], "main", KEYS, [env["backup"]]).ok
    repo = env["tmp"].mktemp("repo-verify") / "r"
    copy_repository(env["repo_dir"], repo)
    tar_key = layout.backup_object("main", env["backup"].id, "base.tar")
    wal_key = layout.wal_object(
        "main", env["primary"].sql("SELECT pg_walfile_name(%s::pg_lsn)", (env["beats"][0].lsn,))
    )
    flip_byte(repo / tar_key)
    flip_byte(repo / wal_key)
    result = verify_repository(LocalStorage(repo), "main", KEYS, [env["backup"]])
    assert {p.key for p in result.problems} == {tar_key, wal_key}, result.problems
