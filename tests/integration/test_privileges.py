"""One privilege model (docs/postgres.md): root and the cluster's os_user take turns on one repository.

As root: backup, dump, retention apply, verify, restore; as postgres, PostgreSQL's own archive_command:
a WAL burst that must archive without a single failure in pg_stat_archiver; then verify and restore as
postgres. Both orders (root first: root's commands create the repository; postgres first: its
archive_command does), file:// and S3 (moto). No test chowns the repository: opsdb must leave it usable.
Also `check` run as root catches what the server's user cannot do, and root's wal-push with a helper
that postgres started is served in-process.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from tests.fixtures.pg import ClusterFactory, make_temp_dir
from tests.integration.backup_env import OPSDB, make_tables

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root("root and the server's user taking turns needs root"),
]
SERVER_USER = "postgres"
BURST = 4  # WAL segments per burst


@pytest.fixture(scope="module")
def cluster(pg_bin_dir: Path, moto_endpoint: str) -> Iterator[Instance]:
    """One archiving cluster; started after the moto fixture, so its environment has S3 credentials."""
    factory = ClusterFactory(pg_bin_dir)
    try:
        inst = factory(archive_mode="on", archive_command="/bin/true")
        make_tables(inst.conninfo(), rows=2000)
        yield inst
    finally:
        factory.close()


def _config(workdir: Path, inst: Instance, url: str, endpoint: str | None = None) -> Path:
    """A config postgres can read, with a key `opsdb key generate` (run as root) gives to postgres."""
    lines = ["[repository]", f'url = "{url}"']
    if endpoint:
        lines += [f'endpoint_url = "{endpoint}"', 'region = "us-east-1"']
    lines += ["[encryption]", f'key_file = "{workdir}/repo.key"', "required = true"]
    lines += ["[compression]", "level = 1", "[wal]", f'spool_dir = "{workdir}/spool"']
    lines += [
        "[clusters.main]",
        f'conninfo = "{inst.conninfo()}"',
        f'os_user = "{SERVER_USER}"',
        f'pg_bin_dir = "{inst.tools.bin_dir}"',
    ]
    lines += ['archive_wait = "60s"', "[clusters.main.retention]", "keep_last = 1", 'min_age = "0s"']
    path = workdir / "opsdb.toml"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    run_root(path, "key", "generate", str(workdir / "repo.key"))
    return path


def run_root(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([OPSDB, "--config", str(config), *args], check=check)


def run_postgres(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["runuser", "-u", SERVER_USER, "--", OPSDB, "--config", str(config), *args], check=check, cwd="/")


def _run(argv: list[str], *, check: bool, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd, env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
    return proc


def _archive_into(inst: Instance, config: Path, *, drained: bool = True) -> None:
    """archive_command = opsdb wal-push into config's repository; with `drained`, wait until a segment
    switched after the change is archived, so an earlier test's backlog (or failure) is behind us."""
    command = f"{OPSDB} --config {config} wal-push %p"
    with connect(inst.conninfo()) as c:
        c.alter_system("archive_command", command)
        c.reload()
        deadline = time.monotonic() + 10
        while c.fetchval("SHOW archive_command") != command and time.monotonic() < deadline:
            time.sleep(0.1)
        if not drained:
            return
        c.execute("SELECT pg_create_restore_point('opsdb test')")
        switched = c.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 90
        while (c.archiver_stats().get("last_archived_wal") or "") < switched:
            if time.monotonic() > deadline:
                raise AssertionError(f"{switched} not archived in 90 s: {c.archiver_stats()}")
            time.sleep(0.2)


def _archiver(inst: Instance) -> dict[str, Any]:
    with connect(inst.conninfo()) as c:
        return c.archiver_stats()


def wal_burst(inst: Instance) -> None:
    """BURST segments archived by PostgreSQL's archive_command (as postgres), with no failure at all."""
    before = _archiver(inst)
    with connect(inst.conninfo()) as c:
        for i in range(BURST):
            c.execute(f"INSERT INTO orders (id, note) VALUES ({10_000_000 + int(time.time_ns() % 10**9) + i}, 'burst')")
            c.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = _archiver(inst)
        if now["failed_count"] != before["failed_count"]:
            raise AssertionError(f"archive_command failed: {now} (see the server log {inst.log_path})")
        if now["archived_count"] >= before["archived_count"] + BURST:
            return
        time.sleep(0.2)
    raise AssertionError(f"the burst was not archived in 90 s: {_archiver(inst)}")


def _root_turn(config: Path, workdir: Path, tag: str) -> None:
    run_root(config, "dump", "--database", "postgres")
    run_root(config, "backup")
    run_root(config, "retention", "apply")
    run_root(config, "verify")
    target = workdir / f"restored-by-root-{tag}"
    run_root(config, "restore", "--target-dir", str(target))
    assert pwd.getpwuid(target.stat().st_uid).pw_name == SERVER_USER


def _postgres_reads(config: Path, workdir: Path, tag: str) -> None:
    run_postgres(config, "verify")
    target = workdir / f"restored-by-postgres-{tag}"
    run_postgres(config, "restore", "--target-dir", str(target))
    assert (target / "PG_VERSION").is_file()


def _alternate(inst: Instance, url: str, order: str, endpoint: str | None = None) -> Path:
    workdir = make_temp_dir("opsdb-privileges-")
    config = _config(workdir, inst, url.replace("{workdir}", str(workdir)), endpoint)
    failed_before = _archiver(inst)["failed_count"]
    if order == "root-first":
        run_root(config, "dump", "--database", "postgres")  # root's command makes the repository
        _archive_into(inst, config)
        _root_turn(config, workdir, "1")
    else:
        _archive_into(inst, config)
        wal_burst(inst)  # postgres's archive_command makes the repository
        run_postgres(config, "backup")
        _root_turn(config, workdir, "1")
    wal_burst(inst)
    _postgres_reads(config, workdir, "1")
    run_root(config, "backup")  # and once more the other way round
    wal_burst(inst)
    run_postgres(config, "verify")
    assert _archiver(inst)["failed_count"] == failed_before
    return workdir


@pytest.mark.parametrize("order", ["root-first", "postgres-first"])
def test_file_repository_root_and_postgres_take_turns(cluster: Instance, order: str) -> None:
    workdir = _alternate(cluster, "file://{workdir}/repo", order)
    owners = {pwd.getpwuid(p.stat().st_uid).pw_name for p in [workdir / "repo", *(workdir / "repo").rglob("*")]}
    assert owners == {SERVER_USER}, owners
    doc = json.loads(run_root(workdir / "opsdb.toml", "--json", "check", check=False).stdout)
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert doc["status"] == "OK", doc
    assert statuses["archiving"] == "OK" and statuses["os_user"] == "OK" and statuses["ownership"] == "OK"


@pytest.mark.parametrize("order", ["root-first", "postgres-first"])
def test_s3_repository_root_and_postgres_take_turns(
    cluster: Instance, order: str, s3_bucket: str, moto_endpoint: str, pg_major: int
) -> None:
    # a prefix per major: the bucket is shared by the session, and a repository holds one system identifier
    _alternate(cluster, f"s3://{s3_bucket}/privileges-{order}-pg{pg_major}", order, moto_endpoint)


def test_check_as_root_and_as_postgres_proves_archiving(cluster: Instance) -> None:
    workdir = make_temp_dir("opsdb-privileges-check-")
    config = _config(workdir, cluster, f"file://{workdir}/repo")
    _archive_into(cluster, config)
    for run in (run_root, run_postgres):
        done = run(config, "--json", "check", check=False)
        doc = json.loads(done.stdout)
        assert done.returncode == 0, doc
        archiving = next(c for c in doc["checks"] if c["name"] == "archiving")
        assert "reached the repository" in archiving["detail"]
        probe = next(c for c in doc["checks"] if c["name"] == "os_user")
        assert "with the server's environment" in probe["detail"], probe


def test_check_as_root_with_a_key_postgres_cannot_read_is_critical(cluster: Instance) -> None:
    workdir = make_temp_dir("opsdb-privileges-key-")
    config = _config(workdir, cluster, f"file://{workdir}/repo")
    key = workdir / "repo.key"
    os.chown(key, 0, 0)  # the old behaviour of `key generate` as root: a key only root can read
    _archive_into(cluster, config, drained=False)
    done = run_root(config, "--json", "check", check=False)
    doc = json.loads(done.stdout)
    statuses = {c["name"]: c for c in doc["checks"]}
    assert done.returncode == 2 and doc["status"] == "CRITICAL"
    assert statuses["encryption"]["status"] == "OK"  # root reads it fine: only the server's user cannot
    assert statuses["os_user encryption"]["status"] == "CRITICAL"
    assert "Permission denied" in statuses["os_user encryption"]["detail"]
    assert statuses["archiving"]["status"] == "CRITICAL"
    assert "archive_command failed" in statuses["archiving"]["detail"]


def test_check_names_what_root_wrote_before_the_model(cluster: Instance) -> None:
    workdir = make_temp_dir("opsdb-privileges-owner-")
    config = _config(workdir, cluster, f"file://{workdir}/repo")
    stale = workdir / "repo" / "clusters" / "main" / "old"
    stale.mkdir(parents=True, mode=0o750)  # as an older opsdb run as root left it: root's, 0750
    (workdir / "repo").chmod(0o750)
    os.chown(workdir / "repo", pwd.getpwnam(SERVER_USER).pw_uid, pwd.getpwnam(SERVER_USER).pw_gid)
    doc = json.loads(run_root(config, "--json", "check", check=False).stdout)
    ownership = next(c for c in doc["checks"] if c["name"] == "ownership")
    assert ownership["status"] == "CRITICAL", ownership
    assert str(stale) in ownership["detail"] and f"chown -R {SERVER_USER}:" in ownership["detail"]
    quick = json.loads(run_root(config, "--json", "check", "--no-switch", check=False).stdout)
    archiving = next(c for c in quick["checks"] if c["name"] == "archiving")
    assert archiving["status"] == "OK" and "not tested (--no-switch)" in archiving["detail"]


def test_root_is_served_in_process_while_postgres_runs_the_helper(cluster: Instance) -> None:
    workdir = make_temp_dir("opsdb-privileges-agent-")
    config = _config(workdir, cluster, f"file://{workdir}/repo")
    _archive_into(cluster, config)
    wal_burst(cluster)  # PostgreSQL's archive_command (as postgres) starts the push helper
    sockets = list((workdir / "spool").rglob("*.sock"))
    assert sockets and {pwd.getpwuid(s.stat().st_uid).pw_name for s in sockets} == {SERVER_USER}
    name = _archiver(cluster)["last_archived_wal"]

    private = Path(make_temp_dir("opsdb-root-only-"))
    os.chown(private, 0, 0)
    private.chmod(0o700)  # nothing in here is postgres's to open
    segment = private / name
    segment.write_bytes((cluster.data_dir / "pg_wal" / name).read_bytes())
    segment.chmod(0o600)
    pushed = run_root(config, "--json", "wal-push", str(segment))
    assert json.loads(pushed.stdout)["stored"] is True, pushed.stderr
    fetched = run_root(config, "wal-fetch", name, str(private / "RECOVERYXLOG"))
    assert fetched.returncode == 0 and (private / "RECOVERYXLOG").read_bytes() == segment.read_bytes()

    # the helper is still the server's, and root left nothing of its own in the spool
    assert all(p.stat().st_uid != 0 for p in (workdir / "spool").rglob("*")), "root wrote into the spool"
    wal_burst(cluster)


def test_check_names_the_credentials_the_servers_environment_lacks(
    make_cluster: ClusterFactory, s3_bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as env:  # a server started without the credentials root's cron has
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.delenv(name, raising=False)
        bare = make_cluster(archive_mode="on", archive_command="/bin/true")
    workdir = make_temp_dir("opsdb-privileges-s3env-")
    config = _config(workdir, bare, f"s3://{s3_bucket}/bare-server", moto_endpoint)
    _archive_into(bare, config, drained=False)
    done = run_root(config, "--json", "check", check=False)
    doc = json.loads(done.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert done.returncode == 2, doc
    assert checks["repository"]["status"] == "OK"  # as root, with root's environment
    seen = checks["os_user repository"]
    assert seen["status"] == "CRITICAL" and "lacks AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in seen["detail"]
    assert "testing" not in json.dumps(doc)  # names only, never a value
    assert checks["archiving"]["status"] == "CRITICAL"
