"""Pure parts of opsdb.pg: binary discovery, argv builders, connection strings and password handling."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg.conninfo
import pytest

from opsdb.errors import ToolError, UsageError
from opsdb.pg.autoconf import quote_setting
from opsdb.pg.conninfo import make_conninfo, parse_conninfo, redact, split_password, with_dbname
from opsdb.pg.instance import Instance, parse_controldata
from opsdb.pg.tools import PgTools, find_bin_dir
from tests.fakes import FakeRunner

BIN = Path("/opt/pg/bin")
SECRET = "s3cr3t 'x\\y"
WITH_PASSWORD = "host=db.example port=5433 user=backup dbname=app password='s3cr3t \\'x\\\\y'"

# --- connection strings ------------------------------------------------------------------------

CONNINFOS = [
    "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
    "host = db  port=5 dbname = 'my db' password='it''s'".replace("''", "\\'"),
    WITH_PASSWORD,
    "postgresql://backup:p%40ss%3Aw0rd@db.example:6432/app?sslmode=require&application_name=x",
    "postgresql://u@h1:1,h2:2/d",
    "postgres://%2Fvar%2Frun%2Fpostgresql/db",
    "postgresql:///mydb?host=/tmp&port=5434",
]


@pytest.mark.parametrize("conninfo", CONNINFOS)
def test_parse_conninfo_agrees_with_libpq(conninfo: str) -> None:
    assert parse_conninfo(conninfo) == psycopg.conninfo.conninfo_to_dict(conninfo)


@pytest.mark.parametrize("conninfo", CONNINFOS)
def test_make_conninfo_round_trips(conninfo: str) -> None:
    params = parse_conninfo(conninfo)
    assert psycopg.conninfo.conninfo_to_dict(make_conninfo(params)) == params


def test_parse_conninfo_errors_are_usage_errors() -> None:
    for bad in ("host", "host=a 'x'", "dbname='unterminated"):
        with pytest.raises(UsageError):
            parse_conninfo(bad)


def test_split_password_key_value() -> None:
    bare, env = split_password(WITH_PASSWORD)
    assert env == {"PGPASSWORD": SECRET}
    assert "s3cr3t" not in bare and "password" not in bare
    assert parse_conninfo(bare) == {"host": "db.example", "port": "5433", "user": "backup", "dbname": "app"}


def test_split_password_uri() -> None:
    bare, env = split_password("postgresql://backup:p%40ss@db:6432/app?sslmode=require")
    assert env == {"PGPASSWORD": "p@ss"}
    assert parse_conninfo(bare) == {
        "user": "backup",
        "host": "db",
        "port": "6432",
        "dbname": "app",
        "sslmode": "require",
    }


def test_split_password_without_password_is_unchanged() -> None:
    assert split_password("postgresql://u@h/d") == ("postgresql://u@h/d", {})


def test_redact_removes_secrets() -> None:
    text = redact(WITH_PASSWORD)
    assert "s3cr3t" not in text and "password=***" in text and "host=db.example" in text
    assert "p%40ss" not in redact("postgresql://u:p%40ss@h/d") and "p@ss" not in redact("postgresql://u:p%40ss@h/d")
    assert redact("password='unterminated") == "<unparseable connection string>"


def test_with_dbname() -> None:
    assert parse_conninfo(with_dbname("postgresql://u:pw@h/d1", "other db")) == {
        "user": "u",
        "password": "pw",
        "host": "h",
        "dbname": "other db",
    }


# --- builders: no password in argv, ever -----------------------------------------------------------

tools = PgTools(BIN)

CONNECTING = {
    "pg_basebackup": lambda c: tools.pg_basebackup(c),
    "pg_dump": lambda c: tools.pg_dump(c, dbname="app"),
    "pg_dumpall": lambda c: tools.pg_dumpall(c),
    "pg_restore": lambda c: tools.pg_restore(c),
    "pg_amcheck": lambda c: tools.pg_amcheck(c),
    "psql": lambda c: tools.psql(c, command="SELECT 1"),
}


@pytest.mark.parametrize("program", sorted(CONNECTING))
def test_password_only_in_env(program: str) -> None:
    cmd = CONNECTING[program](WITH_PASSWORD)
    assert cmd.argv[0] == f"/opt/pg/bin/{program}"
    assert not any("s3cr3t" in a or "password" in a for a in cmd.argv), cmd.argv
    assert cmd.env is not None and cmd.env["PGPASSWORD"] == SECRET
    assert "-w" in cmd.argv  # never prompt


@pytest.mark.parametrize("program", sorted(CONNECTING))
def test_no_password_no_env(program: str) -> None:
    cmd = CONNECTING[program]("host=h user=u")
    assert cmd.env is None or "PGPASSWORD" not in cmd.env


def test_pg_basebackup_to_stdout() -> None:
    cmd = tools.pg_basebackup("host=h user=u", label="opsdb 2026")
    assert list(cmd.argv) == [
        "/opt/pg/bin/pg_basebackup",
        "-D",
        "-",
        "-F",
        "t",
        "-X",
        "fetch",
        "-w",
        "-c",
        "fast",
        "--manifest-checksums=SHA256",
        "-l",
        "opsdb 2026",
        "-d",
        "host=h user=u",
    ]


def test_pg_basebackup_refuses_stream_to_stdout() -> None:
    with pytest.raises(UsageError):
        tools.pg_basebackup("host=h", wal="stream")
    cmd = tools.pg_basebackup("host=h", pgdata="/backup/x", wal="stream", fmt="plain", manifest_checksums=None)
    assert list(cmd.argv[1:8]) == ["-D", "/backup/x", "-F", "p", "-X", "stream", "-w"]
    assert not any(a.startswith("--manifest") for a in cmd.argv)


def test_pg_dump_overrides_dbname_and_custom_format() -> None:
    cmd = tools.pg_dump("host=h dbname=postgres", dbname="app")
    assert list(cmd.argv) == ["/opt/pg/bin/pg_dump", "-F", "c", "-w", "-d", "host=h dbname=app"]


def test_pg_dumpall_globals() -> None:
    cmd = tools.pg_dumpall("host=h", no_role_passwords=True)
    assert list(cmd.argv) == ["/opt/pg/bin/pg_dumpall", "-w", "--globals-only", "--no-role-passwords", "-d", "host=h"]


def test_pg_restore_variants() -> None:
    listing = tools.pg_restore(None, list_only=True, input_path="/x.dump")
    assert list(listing.argv) == ["/opt/pg/bin/pg_restore", "-l", "/x.dump"]
    into = tools.pg_restore("host=h dbname=app", clean=True, no_owner=True, jobs=4)
    assert list(into.argv) == [
        "/opt/pg/bin/pg_restore",
        "-w",
        "--clean",
        "--if-exists",
        "--no-owner",
        "--exit-on-error",
        "-j",
        "4",
        "-d",
        "host=h dbname=app",
    ]


def test_psql_reads_no_rc_and_stops_on_error() -> None:
    cmd = tools.psql("host=h", command="SELECT 1", tuples_only=True)
    assert list(cmd.argv) == [
        "/opt/pg/bin/psql",
        "-X",
        "-q",
        "-w",
        "-v",
        "ON_ERROR_STOP=1",
        "-A",
        "-t",
        "-c",
        "SELECT 1",
        "-d",
        "host=h",
    ]


def test_server_side_builders() -> None:
    init = tools.initdb("/d", run_as="postgres")
    assert list(init.argv) == [
        "/opt/pg/bin/initdb",
        "-D",
        "/d",
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-instructions",
        "-k",
    ]
    assert init.run_as == "postgres"
    start = tools.pg_ctl_start("/d", log_path="/d.log", options=["-p", "5433", "-c", "unix_socket_directories=/a b"])
    assert list(start.argv) == [
        "/opt/pg/bin/pg_ctl",
        "start",
        "-D",
        "/d",
        "-l",
        "/d.log",
        "-w",
        "-t",
        "60",
        "-o",
        "-p 5433 -c 'unix_socket_directories=/a b'",
    ]
    assert list(tools.pg_ctl_stop("/d", mode="immediate").argv[1:6]) == ["stop", "-D", "/d", "-m", "immediate"]
    with pytest.raises(UsageError):
        tools.pg_ctl_stop("/d", mode="now")
    assert tools.pg_controldata("/d").env == {"LC_ALL": "C"}
    assert list(tools.pg_verifybackup("/b", no_parse_wal=True).argv) == [
        "/opt/pg/bin/pg_verifybackup",
        "--quiet",
        "-n",
        "/b",
    ]


# --- binary discovery ------------------------------------------------------------------------------


def _fake_bin(path: Path, *names: str) -> Path:
    path.mkdir(parents=True)
    for name in names:
        (path / name).write_text("#!/bin/sh\n")
        (path / name).chmod(0o755)
    return path


def test_find_bin_dir_explicit(tmp_path: Path) -> None:
    good = _fake_bin(tmp_path / "good", "pg_ctl")
    assert find_bin_dir(good) == good
    with pytest.raises(UsageError, match="has no pg_ctl or pg_basebackup"):
        find_bin_dir(_fake_bin(tmp_path / "bad", "psql"))


def test_find_bin_dir_server_major_then_path_then_highest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lib"
    _fake_bin(root / "13" / "bin", "pg_basebackup")
    _fake_bin(root / "16" / "bin", "pg_basebackup")
    onpath = _fake_bin(tmp_path / "onpath", "pg_basebackup")
    monkeypatch.setenv("PATH", str(onpath))
    assert find_bin_dir(None, 13, debian_root=root) == root / "13" / "bin"
    assert find_bin_dir(None, 14, debian_root=root) == onpath
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_bin_dir(None, None, debian_root=root) == root / "16" / "bin"
    with pytest.raises(UsageError, match="no PostgreSQL binaries"):
        find_bin_dir(None, None, debian_root=tmp_path / "none")


# --- instance pieces that need no server -------------------------------------------------------------


def test_quote_setting() -> None:
    assert quote_setting("replica") == "'replica'"
    assert quote_setting(True) == "'on'"
    assert quote_setting(10) == "'10'"
    assert quote_setting("opsdb --config '/etc/o.toml' wal-push %p") == "'opsdb --config ''/etc/o.toml'' wal-push %p'"
    assert quote_setting("C:\\x\nz") == "'C:\\\\x\\nz'"


def test_configure_replaces_and_appends(tmp_path: Path) -> None:
    inst = Instance(tmp_path, 5999, BIN, None, FakeRunner())
    (tmp_path / "postgresql.auto.conf").write_text("# header\nwal_level = 'minimal'\nport = '5'\n")
    inst.configure({"wal_level": "replica", "archive_command": "a 'b'"})
    assert (tmp_path / "postgresql.auto.conf").read_text() == (
        "# header\nport = '5'\nwal_level = 'replica'\narchive_command = 'a ''b'''\n"
    )
    with pytest.raises(UsageError):
        inst.configure({"bad name": 1})


def test_stop_is_idempotent_and_falls_back_to_immediate(tmp_path: Path) -> None:
    runner = FakeRunner()
    inst = Instance(tmp_path, 5999, BIN, None, runner)
    inst.stop()
    assert runner.calls == []  # no postmaster.pid: nothing to do
    (tmp_path / "postmaster.pid").write_text("1\n")
    runner.script(lambda c: "status" in c.argv, returncode=0)  # still running after the failed fast stop
    runner.script(lambda c: "-m" in c.argv and "fast" in c.argv, returncode=1, stderr=b"server does not shut down")
    runner.script(lambda c: "-m" in c.argv and "immediate" in c.argv, returncode=0)
    inst.stop()
    modes = [c.argv[c.argv.index("-m") + 1] for c in runner.calls if "stop" in c.argv]
    assert modes == ["fast", "immediate"]


def test_stop_failure_surfaces_when_server_is_gone(tmp_path: Path) -> None:
    runner = FakeRunner()
    inst = Instance(tmp_path, 5999, BIN, None, runner)
    (tmp_path / "postmaster.pid").write_text("1\n")
    runner.script(lambda c: "status" in c.argv, returncode=0, times=1)
    runner.script(lambda c: "status" in c.argv, returncode=3)
    runner.script(lambda c: "stop" in c.argv, returncode=1, stderr=b"pg_ctl: could not send stop signal")
    with pytest.raises(ToolError, match="could not send stop signal"):
        inst.stop()


def test_parse_controldata() -> None:
    text = "pg_control version number:            1300\nDatabase cluster state:               in production\n"
    assert parse_controldata(text) == {"pg_control version number": "1300", "Database cluster state": "in production"}


def test_conninfo_of_instance() -> None:
    inst = Instance(Path("/d"), 6000, BIN, None, FakeRunner())
    assert inst.conninfo("app") == "host=127.0.0.1 port=6000 user=postgres dbname=app"
    assert inst.run_as is None or os.geteuid() == 0
