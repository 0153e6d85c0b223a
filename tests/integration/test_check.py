"""`opsdb check` end to end: the real CLI (a child process) against real clusters and a file:// repository."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from opsdb.pg import conn
from opsdb.pg.instance import Instance
from opsdb.proc import Cmd, Completed, LocalRunner

pytestmark = pytest.mark.integration

runner = LocalRunner()
GOOD_ARCHIVE = "true opsdb --config /etc/opsdb/opsdb.toml wal-push %p"  # `true`: archives nothing, succeeds


@pytest.fixture(scope="module")
def archiving_cluster(pg_bin_dir: Path) -> Instance:
    from tests.fixtures.pg import ClusterFactory

    factory = ClusterFactory(pg_bin_dir)
    try:
        yield factory(archive_mode="on", archive_command=GOOD_ARCHIVE)
    finally:
        factory.close()


def _config(tmp_path: Path, target: Instance | str, *, repo: str | None = None, extra: str = "") -> Path:
    """A config the server's user can read too (check runs opsdb as that user), in a directory it owns; for
    a running Instance with its conninfo and bin directory (the binaries of its major), else a bare conninfo."""
    del tmp_path  # pytest's tmp dirs are root's 0700 when run as root
    from tests.fixtures.pg import make_temp_dir

    workdir = make_temp_dir("opsdb-check-")
    path = workdir / "opsdb.toml"
    url = repo or f"file://{workdir}/repo"
    conninfo = target.conninfo() if isinstance(target, Instance) else target
    bin_dir = f'pg_bin_dir = "{target.tools.bin_dir}"\n' if isinstance(target, Instance) else ""
    path.write_text(
        f'[repository]\nurl = "{url}"\n[wal]\nspool_dir = "{workdir}/spool"\n\n'
        f'[clusters.main]\nconninfo = "{conninfo}"\n{bin_dir}archive_wait = "3s"\n{extra}'
    )
    path.chmod(0o644)
    return path


def _archive_with(inst: Instance, config: Path) -> None:
    """A real archive_command into config's repository, so check's WAL switch can reach it."""
    _set_archive_command(inst, f"{Path(sys.executable).with_name('opsdb')} --config {config} wal-push %p")


def _check(config: Path, *, as_json: bool = True) -> tuple[int, dict | str]:
    argv = [sys.executable, "-m", "opsdb", "--config", str(config)] + (["--json"] if as_json else []) + ["check"]
    result: Completed = runner.run(Cmd(tuple(argv), timeout=60), check=False)
    out = result.text
    return result.returncode, (json.loads(out) if as_json else out + result.stderr.decode())


def _statuses(doc: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in doc["checks"]}


def _details(doc: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in doc["checks"]}


def _set_archive_command(inst: Instance, command: str) -> None:
    with conn.connect(inst.conninfo()) as c:
        c.alter_system("archive_command", command)
        c.reload()
        deadline = time.monotonic() + 10
        while c.fetchval("SHOW archive_command") != command and time.monotonic() < deadline:
            time.sleep(0.1)


def test_all_ok_exits_0(archiving_cluster: Instance, tmp_path: Path, pg_major: int) -> None:
    config = _config(tmp_path, archiving_cluster)
    _archive_with(archiving_cluster, config)
    code, doc = _check(config)
    assert isinstance(doc, dict)
    assert code == 0, doc
    assert doc["status"] == "OK"
    assert list(_statuses(doc)) == [
        "config",
        "repository",
        "marker",
        "encryption",
        "server",
        "binaries",
        "wal_level",
        "archive_mode",
        "archive_command",
        "archiver",
        "summarize_wal",
        "os_user",
        "os_user repository",
        "os_user encryption",
        "os_user spool",
        "ownership",
        "archiving",
    ]
    assert ("not available on PostgreSQL 15" in _details(doc)["summarize_wal"]) == (pg_major < 17)
    assert set(_statuses(doc).values()) == {"OK"}
    assert not list((config.parent / "repo").rglob("probe-*")), "the probe object was left behind"


def test_human_output_one_line_per_check(archiving_cluster: Instance, tmp_path: Path) -> None:
    config = _config(tmp_path, archiving_cluster)
    _archive_with(archiving_cluster, config)
    code, text = _check(config, as_json=False)
    assert code == 0, text
    lines = str(text).splitlines()
    assert (
        lines[1].startswith("OK       repository")
        and "writable, conditional writes honoured" in lines[1]
        and lines[1].endswith(" ms)")
    )
    assert lines[-1].startswith("OK: 17 ok")


def test_archive_mode_off_is_critical(pg_cluster: Instance, tmp_path: Path) -> None:
    code, doc = _check(_config(tmp_path, pg_cluster))
    assert isinstance(doc, dict)
    assert code == 2 and doc["status"] == "CRITICAL"
    statuses = _statuses(doc)
    assert statuses["server"] == "OK" and statuses["wal_level"] == "OK"
    assert statuses["archive_mode"] == "CRITICAL" and statuses["archive_command"] == "CRITICAL"


def test_foreign_archive_command_warns_and_failing_archiver_warns(archiving_cluster: Instance, tmp_path: Path) -> None:
    config = _config(tmp_path, archiving_cluster)
    try:
        _set_archive_command(archiving_cluster, "cp %p /nowhere/%f")
        code, doc = _check(config)
        assert isinstance(doc, dict)
        assert _statuses(doc)["archive_command"] == "WARNING"
        # and the WAL switch proves it archives nothing: the segment's failure is reported, not waited out
        assert code == 2 and _statuses(doc)["archiving"] == "CRITICAL"
        assert "archive_command failed for" in next(c for c in doc["checks"] if c["name"] == "archiving")["detail"]

        _set_archive_command(archiving_cluster, "false opsdb wal-push %p")
        with conn.connect(archiving_cluster.conninfo()) as c:
            c.execute("CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS x")
            c.execute("SELECT pg_switch_wal()")
            deadline = time.monotonic() + 20
            while not c.fetchval("SELECT failed_count FROM pg_stat_archiver") and time.monotonic() < deadline:
                time.sleep(0.2)
        code, doc = _check(config)
        assert isinstance(doc, dict)
        assert code == 2, doc
        assert _statuses(doc)["archive_command"] == "OK"
        assert _statuses(doc)["os_user"] == "CRITICAL"  # `false opsdb ...` is not an opsdb that runs
        archiver = next(c for c in doc["checks"] if c["name"] == "archiver")
        assert archiver["status"] == "WARNING" and "archiving is failing" in archiver["detail"]
    finally:
        _set_archive_command(archiving_cluster, GOOD_ARCHIVE)


def test_unreachable_server_is_critical_without_the_password(tmp_path: Path) -> None:
    from tests.fixtures.pg import free_port

    secret = "Pw-not-to-be-printed"
    config = _config(tmp_path, f"host=127.0.0.1 port={free_port()} user=postgres password={secret}")
    code, doc = _check(config)
    assert isinstance(doc, dict)
    assert code == 2 and doc["status"] == "CRITICAL"
    server = next(c for c in doc["checks"] if c["name"] == "server")
    assert server["status"] == "CRITICAL" and "Connection refused" in server["detail"]
    assert secret not in json.dumps(doc)
    assert _statuses(doc)["wal_level"] == "UNKNOWN"
    code, text = _check(config, as_json=False)
    assert code == 2 and secret not in str(text)


def test_unwritable_repository_and_missing_key_are_critical(archiving_cluster: Instance, tmp_path: Path) -> None:
    extra = f'\n[encryption]\nkey_file = "{tmp_path}/missing.key"\n'
    path = tmp_path / "opsdb.toml"
    path.write_text(
        f'[repository]\nurl = "file:///dev/null/repo"\n{extra}\n[clusters.main]\nconninfo = "{archiving_cluster.conninfo()}"\n'
        'archive_wait = "3s"\n'
    )
    code, doc = _check(path)
    assert isinstance(doc, dict)
    assert code == 2
    statuses = _statuses(doc)
    assert statuses["repository"] == "CRITICAL" and statuses["encryption"] == "CRITICAL"
    assert statuses["server"] == "OK"


def test_replicas_are_checked(archiving_cluster: Instance, tmp_path: Path) -> None:
    from tests.fixtures.pg import free_port

    extra = (
        f'\n[[clusters.main.replicas]]\nname = "r1"\nconninfo = "{archiving_cluster.conninfo()}"\n'
        f'\n[[clusters.main.replicas]]\nname = "r2"\nconninfo = "host=127.0.0.1 port={free_port()} user=postgres"\n'
    )
    code, doc = _check(_config(tmp_path, archiving_cluster, extra=extra))
    assert isinstance(doc, dict)
    statuses = _statuses(doc)
    assert statuses["replica r1"] == "WARNING"  # reachable, but a primary: not replicating
    assert statuses["replica r2"] == "CRITICAL"
    assert code == 2
