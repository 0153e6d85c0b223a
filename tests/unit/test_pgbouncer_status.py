"""pgbouncer status grading (model.pgbouncer_status) and its console reading with a scripted console."""

from __future__ import annotations

from decimal import Decimal

import pytest

from opsdb.config import PgbouncerConfig
from opsdb.errors import DatabaseError
from opsdb.model.pgbouncer_status import ConsoleFigures, StatusThresholds, grade, unreachable
from opsdb.model.results import Status
from opsdb.ops.pooler.status import pgbouncer_status, thresholds_from
from opsdb.render.pgbouncer_status import render_status

ADMIN_POOL = {"database": "pgbouncer", "user": "pgbouncer", "cl_active": 1, "cl_waiting": 9, "maxwait": 999}


def _pool(db="appdb", user="app", waiting=0, maxwait=0, maxwait_us=0):
    return {
        "database": db,
        "user": user,
        "cl_active": 3,
        "cl_waiting": waiting,
        "sv_active": 2,
        "sv_idle": 0,
        "sv_used": 0,
        "maxwait": maxwait,
        "maxwait_us": maxwait_us,
        "pool_mode": "transaction",
    }


def _figures(pools=(), used=10, config=None, databases=()):
    return ConsoleFigures(
        version="PgBouncer 1.18.0",
        pools=[ADMIN_POOL, *pools],
        stats=[],
        databases=[{"name": "pgbouncer", "paused": 1, "disabled": 0}, *databases],
        lists={"used_clients": used, "free_clients": 40},
        config={"query_wait_timeout": "120", "max_client_conn": "100"} if config is None else config,
    )


def _status(report, name):
    return report.get(name).status


def test_an_idle_pooler_is_ok_and_the_admin_pool_is_ignored():
    report = grade(_figures([_pool()]), StatusThresholds())
    assert report.status == Status.OK and report.exit_code == 0
    assert [c.name for c in report.checks] == ["console", "wait", "clients", "paused"]


@pytest.mark.parametrize(
    ("maxwait", "maxwait_us", "expected"),
    [
        (0, 300_000, Status.OK),  # waiting briefly is normal for a busy transaction pool
        (4, 999_999, Status.OK),
        (5, 0, Status.WARNING),  # status_wait_warning 5s
        (59, 999_999, Status.WARNING),
        (60, 0, Status.CRITICAL),  # query_wait_timeout 120s / 2
    ],
)
def test_waiting_clients_are_graded_by_the_longest_wait(maxwait, maxwait_us, expected):
    pools = [_pool(waiting=0, maxwait=500), _pool("other", waiting=2, maxwait=maxwait, maxwait_us=maxwait_us)]
    report = grade(_figures(pools), StatusThresholds())
    assert _status(report, "wait") == expected
    assert report.status == expected
    if expected != Status.OK:
        assert "2 client(s) waiting in 1 pool(s)" in report.get("wait").detail
        assert "other/app" in report.get("wait").detail


def test_critical_wait_follows_the_running_query_wait_timeout_then_config_then_a_fixed_one():
    pools = [_pool(waiting=1, maxwait=10)]
    running = grade(_figures(pools, config={"query_wait_timeout": "20", "max_client_conn": "100"}), StatusThresholds())
    assert _status(running, "wait") == Status.CRITICAL
    assert "critical 10s = query_wait_timeout 20s / 2" in running.get("wait").detail
    # SHOW CONFIG refused: the configured query_wait_timeout and max_client_conn are used
    configured = grade(_figures(pools, config={}), StatusThresholds(), query_wait_timeout=120, max_client_conn=100)
    assert _status(configured, "wait") == Status.WARNING
    assert _status(configured, "clients") == Status.OK
    forever = grade(_figures([_pool(waiting=1, maxwait=61)], config={"query_wait_timeout": "0"}), StatusThresholds())
    assert _status(forever, "wait") == Status.CRITICAL and "wait forever" in forever.get("wait").detail
    explicit = grade(_figures(pools), StatusThresholds(wait_warning=1, wait_critical=9))
    assert _status(explicit, "wait") == Status.CRITICAL


def test_client_slots_against_max_client_conn():
    t = StatusThresholds()
    assert _status(grade(_figures(used=79), t), "clients") == Status.OK
    assert _status(grade(_figures(used=80), t), "clients") == Status.WARNING
    full = grade(_figures(used=95), t)
    assert _status(full, "clients") == Status.CRITICAL
    assert "95 of max_client_conn 100 client connections (95%" in full.get("clients").detail
    unknown = grade(ConsoleFigures("v", [], [], [], {}, {}), t)
    assert _status(unknown, "clients") == Status.UNKNOWN


def test_paused_or_disabled_databases_warn():
    dbs = [{"name": "appdb", "paused": 1, "disabled": 0}, {"name": "rep", "paused": 0, "disabled": 1}]
    report = grade(_figures(databases=dbs), StatusThresholds())
    assert _status(report, "paused") == Status.WARNING
    assert "appdb (paused), rep (disabled)" in report.get("paused").detail


def test_unreachable_is_critical_and_a_refused_login_unknown():
    down = unreachable('connection to server at "127.0.0.1", port 6997 failed: Connection refused')
    assert down.status == Status.CRITICAL and down.exit_code == 2
    refused = unreachable('port 6998 failed: FATAL:  "trust" authentication failed')
    assert refused.status == Status.UNKNOWN and refused.exit_code == 3


class _Console:
    """A scripted admin console: SHOW <subject> -> rows, or a DatabaseError."""

    def __init__(self, answers):
        self.answers = answers
        self.asked: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def fetchall(self, sql, params=None):
        self.asked.append(sql)
        answer = self.answers[sql]
        if isinstance(answer, Exception):
            raise answer
        return answer


ANSWERS = {
    "SHOW VERSION": [{"version": "PgBouncer 1.18.0"}],
    "SHOW POOLS": [_pool(waiting=3, maxwait=7)],
    "SHOW STATS": [{"database": "appdb", "total_xact_count": Decimal("12"), "avg_wait_time": Decimal("2.5")}],
    "SHOW DATABASES": [{"name": "appdb", "paused": 0, "disabled": 0}],
    "SHOW LISTS": [{"list": "used_clients", "items": 4}],
    "SHOW CONFIG": [{"key": "query_wait_timeout", "value": "120"}, {"key": "max_client_conn", "value": "100"}],
}


def test_status_reads_the_console_and_serialises_plain_numbers():
    console = _Console(ANSWERS)
    cfg = PgbouncerConfig()
    result = pgbouncer_status(
        "host=127.0.0.1 port=6432 dbname=pgbouncer user=mon password=s3cret",
        thresholds_from(cfg),
        cfg=cfg,
        open_console=lambda conninfo, timeout: console,
    )
    assert result.exit_code == 1  # 7s waiting: WARNING
    doc = result.to_dict()
    assert doc["status"] == "WARNING" and doc["waiting_clients"] == 3 and doc["max_wait_seconds"] == 7.0
    assert doc["used_clients"] == 4 and doc["max_client_conn"] == 100
    assert doc["stats"][0] == {"database": "appdb", "total_xact_count": 12, "avg_wait_time": 2.5}
    assert "s3cret" not in str(doc)
    text = render_status(doc)
    assert text.startswith("PGBOUNCER WARNING - 3 client(s) waiting")
    assert "| waiting_clients=3 max_wait=7.000s used_clients=4" in text.splitlines()[0]
    assert "cl_waiting" in text


def test_status_without_show_config_and_with_an_unreachable_console():
    console = _Console({**ANSWERS, "SHOW CONFIG": DatabaseError("not allowed")})
    cfg = PgbouncerConfig(query_wait_timeout=10, max_client_conn=5)
    result = pgbouncer_status("host=x", thresholds_from(cfg), cfg=cfg, open_console=lambda c, timeout: console)
    assert result.report.get("wait").status == Status.CRITICAL  # 7s >= 10 / 2
    assert result.report.get("clients").status == Status.WARNING  # 4 of 5

    def refuse(conninfo, timeout):
        raise DatabaseError("unable to connect to host=x: Connection refused")

    down = pgbouncer_status("host=x", thresholds_from(cfg), open_console=refuse)
    assert down.exit_code == 2 and down.figures is None
    assert down.to_dict()["checks"][0]["detail"].startswith("pgbouncer not reachable")
    assert render_status(down.to_dict()).startswith("PGBOUNCER CRITICAL - pgbouncer not reachable")


def test_command_line_thresholds_override_the_config():
    cfg = PgbouncerConfig(status_wait_warning=2, status_wait_critical=30)
    assert thresholds_from(cfg) == StatusThresholds(2, 30, 80, 95)
    assert thresholds_from(cfg, wait_warning=1, wait_critical=3) == StatusThresholds(1, 3, 80, 95)
