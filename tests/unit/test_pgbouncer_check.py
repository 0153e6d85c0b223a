"""pgbouncer check's pure parts: the scratch copy for the trial run, and the pool arithmetic of a file."""

from __future__ import annotations

from pathlib import Path

from opsdb.config import PgbouncerConfig
from opsdb.model.pgbouncer import ServerLimits, plan_pools
from opsdb.model.pgbouncer_ini import parse_ini
from opsdb.ops.pooler.check import check_ini_file, hba_log_problems, scratch_copy, sizing_request
from opsdb.ops.pooler.status import admin_conninfo
from tests.fakes import FakeRunner

INI = """\
[pgbouncer]
listen_addr = 10.0.0.1
listen_port = 6432
user = pgbouncer
auth_file = /etc/pgbouncer/userlist.txt
logfile = /var/log/pgbouncer.log
default_pool_size = 10
max_clients = 3

[databases]
app = host=h dbname=app pool_size=4 reserve_pool=2
reports = host=h dbname=reports max_db_connections=5
* = host=h
"""


def test_scratch_copy_moves_port_files_and_user_but_keeps_everything_else():
    scratch = Path("/tmp/scratch")
    text = scratch_copy(INI, scratch, 40000, {"auth_file": scratch / "auth_file.copy"})
    main = parse_ini(text).section("pgbouncer")
    assert main["listen_port"] == "40000" and main["listen_addr"] == "127.0.0.1"
    assert main["logfile"] == "/tmp/scratch/pgbouncer.log"
    assert main["auth_file"] == "/tmp/scratch/auth_file.copy"
    assert "user" not in main
    assert main["max_clients"] == "3"  # unknown keys stay, so the real binary can refuse them
    assert parse_ini(text).section("databases") == parse_ini(INI).section("databases")


def test_sizing_request_from_a_file():
    req = sizing_request(parse_ini(INI), ServerLimits(100, 3), 2, instances=1, server_reserve=5)
    assert [d.name for d in req.databases] == ["app", "reports"]  # the '*' fallback is not countable
    app = req.databases[0]
    assert (app.pool_size, app.reserve_pool_size) == (4, 2)
    plan = plan_pools(req)
    # app: 2 users * (4 + 2) = 12; reports: min(5, 2 * 10) = 5
    assert plan.worst_case_total == 17


def test_admin_conninfo_defaults():
    cfg = PgbouncerConfig(listen_addr="*", listen_port=6543, stats_users=["mon"])
    assert admin_conninfo(cfg) == "host=127.0.0.1 port=6543 dbname=pgbouncer user=mon"
    assert admin_conninfo(cfg, "admin").endswith("user=admin")


def test_hba_problems_are_read_from_pgbouncer_s_log():
    # PgBouncer 1.18's own lines for a broken and a missing HBA file (it starts anyway)
    log = (
        "2026-11-22 00:08:00.846 UTC [29769] WARNING hba line 1: unsupported method: buf=bogusmethod\n"
        "2026-11-22 00:08:00.846 UTC [29769] WARNING could not parse hba config line 1\n"
        "2026-11-22 00:08:00.849 UTC [29769] LOG listening on 127.0.0.1:6999\n"
        "2026-11-22 00:08:05.841 UTC [29774] ERROR could not open hba config file /tmp/x/hba: No such file or directory\n"
    )
    assert hba_log_problems(log) == [
        "WARNING hba line 1: unsupported method: buf=bogusmethod",
        "WARNING could not parse hba config line 1",
        "ERROR could not open hba config file /tmp/x/hba: No such file or directory",
    ]
    assert hba_log_problems("2026-11-22 00:08:00.850 UTC [1] LOG process up: PgBouncer 1.18.0\n") == []


def test_max_user_connections_of_a_file_caps_the_sum():
    text = INI.replace("default_pool_size = 10\n", "default_pool_size = 10\nmax_user_connections = 4\n")
    plan = plan_pools(sizing_request(parse_ini(text), ServerLimits(100, 3), 2, instances=1, server_reserve=5))
    assert plan.worst_case_total == 8  # 2 users * 4, below the 17 of the pools


def _check(tmp_path, ini_text: str, version: str = "1.25", **files: str):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "pgbouncer.ini"
    path.write_text(ini_text)
    result = check_ini_file(
        path, runner=FakeRunner(), pgbouncer_bin=None, run_as=None, server_limits=None, target_version_override=version
    )
    return result, [f"{f.level}: {f.message}" for f in result.findings]


MAIN = "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_file = {d}/users.txt\n"
USERS = '"app" "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"\n'


def test_check_reads_the_hba_file_and_the_new_keys(tmp_path):
    ini = MAIN.format(d=tmp_path) + (
        f"auth_type = hba\nauth_hba_file = {tmp_path}/hba.conf\nauth_user = pgb\nauth_dbname = authdb\n"
        f"server_tls_cert_file = {tmp_path}/c.crt\nmax_user_connections = 5\n[databases]\napp = host=h\n"
    )
    result, found = _check(tmp_path, ini, "1.18", **{"users.txt": USERS, "hba.conf": "host all all all md5\n"})
    assert result.target_version == (1, 18, 0) and result.target_source == "target_version"
    assert result.loaded is None  # no binary given
    expected = [
        "error: line 7: 'auth_dbname' needs PgBouncer >= 1.19.0 (target is 1.18.0)",
        "error: auth_dbname 'authdb' is not a [databases] entry (auth_query would fail)",
        "error: server_tls_cert_file and server_tls_key_file go together",
        "error: auth_hba_file line 1: 'all' is not an IP address",
        "error: auth_hba_file has no usable rule",
        f"error: server_tls_cert_file {tmp_path}/c.crt: no such file",
    ]
    for text in expected:
        assert any(f.startswith(text) for f in found), (text, found)
    assert not result.ok


def test_check_of_a_good_hba_setup_and_a_readable_key(tmp_path):
    ini = MAIN.format(d=tmp_path) + (
        f"auth_type = hba\nauth_hba_file = {tmp_path}/hba.conf\n"
        f"server_tls_cert_file = {tmp_path}/c.crt\nserver_tls_key_file = {tmp_path}/c.key\n[databases]\napp = host=h\n"
    )
    files = {"users.txt": USERS, "hba.conf": "host all app 127.0.0.1/32 scram-sha-256\n", "c.crt": "x", "c.key": "x"}
    result, found = _check(tmp_path, ini, **files)
    assert result.ok, found
    (tmp_path / "c.key").chmod(0o644)
    result, found = _check(tmp_path, ini)
    assert found == [f"warning: server_tls_key_file {tmp_path}/c.key is world-readable (chmod 600)"]
    assert result.ok  # a warning only: PgBouncer itself does not refuse it
