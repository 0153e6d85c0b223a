"""The pieces of `check` as the server's user: the probe's command line, the server's environment,
credentials compared by name, paths another account cannot use, the spool, and the WAL switch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from opsdb.model.results import Status
from opsdb.ops.common.privileges import Account
from opsdb.ops.health import as_server as hs

STRANGER = Account("stranger", 4_000_321, 4_000_321, "/nonexistent")


def test_probe_runs_the_archive_commands_own_opsdb_and_options() -> None:
    argv, env = hs.probe_argv(
        "OPSDB_X=1 /opt/opsdb/bin/opsdb --config '/etc/o p.toml' --cluster c wal-push %p", None, "c"
    )
    assert argv == ["/opt/opsdb/bin/opsdb", "--config", "/etc/o p.toml", "--cluster", "c", "archive-probe"]
    assert env == {"OPSDB_X": "1"}


@pytest.mark.parametrize("command", ["cp %p /archive/%f", "", None, "opsdb 'unbalanced wal-push %p"])
def test_probe_falls_back_to_this_opsdb_when_the_command_is_not_opsdb(command: str | None) -> None:
    argv, env = hs.probe_argv(command, "/etc/opsdb.toml", "main")
    assert argv == [
        sys.executable,
        "-I",
        "-m",
        "opsdb",
        "--config",
        "/etc/opsdb.toml",
        "--cluster",
        "main",
        "archive-probe",
    ]
    assert env == {}


def test_server_environment_is_read_only_from_the_postmaster_of_that_directory(tmp_path: Path) -> None:
    # a stand-in postmaster: a process whose cwd is the data directory, with an environment of its own
    child = subprocess.Popen(["sleep", "30"], cwd=tmp_path, env={"OPSDB_TEST_MARK": "seen", "PATH": "/usr/bin:/bin"})
    try:
        (tmp_path / "postmaster.pid").write_text(f"{child.pid}\n{tmp_path}\n")
        deadline = time.monotonic() + 10
        env = None
        while env is None and time.monotonic() < deadline:  # until the child has exec'd sleep
            env = hs.server_environment(str(tmp_path))
            if env is not None and "OPSDB_TEST_MARK" not in env:
                env = None
            time.sleep(0.01)
        assert env == {"OPSDB_TEST_MARK": "seen", "PATH": "/usr/bin:/bin"}
        other = tmp_path / "other"
        other.mkdir()
        (other / "postmaster.pid").write_text(f"{child.pid}\n")  # a live pid, but not this directory's server
        assert hs.server_environment(str(other)) is None
    finally:
        child.kill()
        child.wait()
    assert hs.server_environment(str(tmp_path / "missing")) is None
    assert hs.server_environment(None) is None


def test_credentials_are_compared_by_name_never_by_value(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    mine = hs.credential_sources({"AWS_ACCESS_KEY_ID": "AKIA-secret", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}, str(tmp_path))
    assert mine == ["env:AWS_ACCESS_KEY_ID", "env:AWS_SECRET_ACCESS_KEY", f"file:{tmp_path}/.aws/credentials"]
    assert "secret" not in " ".join(mine).lower().replace("secret_access", "")
    theirs = hs.credential_sources({}, "/nonexistent")
    assert hs.missing_credentials(mine, theirs) == [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "a readable ~/.aws/credentials",
    ]
    assert (
        hs.missing_credentials(mine, ["env:AWS_ACCESS_KEY_ID", "env:AWS_SECRET_ACCESS_KEY", "file:/x/credentials"])
        == []
    )


def test_inaccessible_names_what_another_account_could_not_use(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "open").mkdir(parents=True)
    (repo / "closed").mkdir(mode=0o750)
    (repo / "open" / "readable").write_bytes(b"x")
    (repo / "open" / "private").write_bytes(b"x")
    for path, mode in ((repo, 0o777), (repo / "open", 0o777), (repo / "open" / "readable", 0o644)):
        path.chmod(mode)
    (repo / "open" / "private").chmod(0o600)
    (repo / "closed").chmod(0o750)
    count, examples = hs.inaccessible(repo, STRANGER)
    assert count == 2
    assert examples == [str(repo / "closed"), str(repo / "open" / "private")]
    me = Account("me", os.geteuid(), os.getegid(), str(tmp_path))
    assert hs.inaccessible(repo, me) == (0, [])
    assert hs.ownership_fix(str(repo), me).startswith("chown -R me:")


def test_spool_status(tmp_path: Path) -> None:
    assert hs.spool_status(str(tmp_path / "none"), "main", False)[0] is Status.OK
    status, detail = hs.spool_status(str(tmp_path / "spool"), "main", True)
    assert status is Status.OK and (tmp_path / "spool" / "main").is_dir()
    assert list((tmp_path / "spool" / "main").iterdir()) == []
    (tmp_path / "file").write_bytes(b"not a directory")
    status, detail = hs.spool_status(str(tmp_path / "file"), "main", True)
    assert status is Status.CRITICAL and "install -d -o " in detail and "in-process" in detail


class SwitchingConn:
    """pg_stat_archiver and the two functions of a WAL switch, as a real server answers them."""

    def __init__(self, *, fail: bool = False, switch_error: Exception | None = None) -> None:
        self.fail = fail
        self.switch_error = switch_error
        self.sql: list[str] = []
        self.polls = 0

    def archiver_stats(self) -> dict[str, Any]:
        self.polls += 1
        if self.fail and self.polls > 1:
            return {"failed_count": 3, "last_failed_wal": "000000010000000000000007"}
        return {"failed_count": 2, "last_failed_wal": "000000010000000000000001"}

    def fetchval(self, sql: str) -> Any:
        self.sql.append(sql)
        if self.switch_error is not None:
            raise self.switch_error
        return "000000010000000000000007" if "pg_switch_wal" in sql else "0/5000090"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wal_switch_waits_until_the_segment_is_archived() -> None:
    conn, clock = SwitchingConn(), Clock()
    seen: list[str] = []

    def archived(name: str) -> bool:
        seen.append(name)
        return len(seen) >= 3

    status, detail = hs.prove_archiving(conn, archived, 60, clock=clock, sleep=clock.sleep)
    assert status is Status.OK and "000000010000000000000007 reached the repository" in detail
    assert "pg_create_restore_point" in conn.sql[0] and "pg_switch_wal" in conn.sql[1]
    assert seen == ["000000010000000000000007"] * 3


def test_wal_switch_reports_the_segments_failure_at_once_and_a_timeout_bounded() -> None:
    conn, clock = SwitchingConn(fail=True), Clock()
    status, detail = hs.prove_archiving(conn, lambda name: False, 60, clock=clock, sleep=clock.sleep)
    assert status is Status.CRITICAL and "archive_command failed for 000000010000000000000007" in detail
    assert clock.now < 1

    conn, clock = SwitchingConn(), Clock()
    status, detail = hs.prove_archiving(conn, lambda name: False, 5, clock=clock, sleep=clock.sleep)
    assert status is Status.CRITICAL and "not in the repository after 5 s" in detail
    assert 5 <= clock.now < 7


def test_wal_switch_without_the_right_names_the_grant() -> None:
    conn = SwitchingConn(switch_error=RuntimeError("permission denied for function pg_switch_wal"))
    status, detail = hs.prove_archiving(conn, lambda name: True, 5)
    assert status is Status.CRITICAL and "GRANT EXECUTE ON FUNCTION pg_switch_wal()" in detail
