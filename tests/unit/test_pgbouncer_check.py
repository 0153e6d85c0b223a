"""pgbouncer check's pure parts: the scratch copy for the trial run, and the pool arithmetic of a file."""

from __future__ import annotations

from pathlib import Path

from opsdb.config import PgbouncerConfig
from opsdb.model.pgbouncer import ServerLimits, plan_pools
from opsdb.model.pgbouncer_ini import parse_ini
from opsdb.ops.pgbouncer_check import admin_conninfo, scratch_copy, sizing_request

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
