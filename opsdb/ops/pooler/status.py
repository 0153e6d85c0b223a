"""`opsdb pgbouncer status`: read the admin console, grade it (model.pgbouncer_status), exit 0/1/2/3.

An unreachable console is a result, not an error: CRITICAL when nothing answers (pgbouncer is down
for its clients too), UNKNOWN when pgbouncer answers but refuses the monitoring login.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from opsdb.config import PgbouncerConfig
from opsdb.errors import DatabaseError
from opsdb.model.pgbouncer_status import ConsoleFigures, StatusThresholds, grade, plain_rows, pool_wait_seconds
from opsdb.model.pgbouncer_status import unreachable as unreachable_report
from opsdb.model.results import CheckReport
from opsdb.pg import pgbouncer_admin
from opsdb.pg.conn import PgConnection
from opsdb.pg.conninfo import make_conninfo, redact

OpenConsole = Callable[..., PgConnection]


def admin_conninfo(cfg: PgbouncerConfig, user: str | None = None) -> str:
    """The admin console of the configured pgbouncer: its listen address (or socket dir) and port."""
    who = user or (cfg.admin_users[0] if cfg.admin_users else cfg.stats_users[0] if cfg.stats_users else "pgbouncer")
    host = cfg.listen_addr if cfg.listen_addr not in ("", "*", "0.0.0.0", "::") else "127.0.0.1"
    return make_conninfo({"host": host, "port": str(cfg.listen_port), "dbname": "pgbouncer", "user": who})


def thresholds_from(
    cfg: PgbouncerConfig, *, wait_warning: float | None = None, wait_critical: float | None = None
) -> StatusThresholds:
    """[pgbouncer] status_* keys, with the command line's --wait-warning/--wait-critical on top."""
    return StatusThresholds(
        wait_warning=cfg.status_wait_warning if wait_warning is None else wait_warning,
        wait_critical=cfg.status_wait_critical if wait_critical is None else wait_critical,
        clients_warning_pct=cfg.status_clients_warning_pct,
        clients_critical_pct=cfg.status_clients_critical_pct,
    )


@dataclasses.dataclass(frozen=True)
class PgbouncerStatus:
    target: str  # redacted conninfo of the console
    report: CheckReport
    figures: ConsoleFigures | None  # None: the console did not answer
    thresholds: StatusThresholds

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    @property
    def waiting_clients(self) -> int:
        pools = self.figures.pools if self.figures else []
        return sum(int(p.get("cl_waiting") or 0) for p in pools if p.get("database") != "pgbouncer")

    def to_dict(self) -> dict[str, Any]:
        f = self.figures
        pools = f.pools if f else []
        return {
            "status": self.report.status.value,
            "console": self.target,
            "checks": [c.to_dict() for c in self.report.checks],
            "version": f.version if f else None,
            "waiting_clients": self.waiting_clients,
            "max_wait_seconds": max(
                (pool_wait_seconds(p) for p in pools if p.get("database") != "pgbouncer"), default=0.0
            ),
            "used_clients": f.lists.get("used_clients") if f else None,
            "max_client_conn": int(f.config["max_client_conn"])
            if f and f.config.get("max_client_conn", "").isdigit()
            else None,
            "thresholds": dataclasses.asdict(self.thresholds),
            "pools": pools,
            "databases": f.databases if f else [],
            "stats": f.stats if f else [],
        }


def read_console(conn: PgConnection) -> ConsoleFigures:
    """SHOW VERSION, POOLS, STATS, DATABASES, LISTS and CONFIG. SHOW CONFIG may be refused (an older
    pgbouncer's stats_users); the grading then uses the configured values instead."""
    try:
        running = pgbouncer_admin.config(conn)
    except DatabaseError:
        running = {}
    return ConsoleFigures(
        version=pgbouncer_admin.version(conn),
        pools=plain_rows(pgbouncer_admin.show(conn, "POOLS")),
        stats=plain_rows(pgbouncer_admin.show(conn, "STATS")),
        databases=plain_rows(pgbouncer_admin.show(conn, "DATABASES")),
        lists=pgbouncer_admin.lists(conn),
        config=running,
    )


def pgbouncer_status(
    conninfo: str,
    thresholds: StatusThresholds,
    *,
    cfg: PgbouncerConfig | None = None,
    timeout: float = 5,
    open_console: OpenConsole = pgbouncer_admin.open_console,
) -> PgbouncerStatus:
    """Read and grade the console. Never raises for an unreachable console: that is CRITICAL/UNKNOWN."""
    target = redact(conninfo)
    try:
        with open_console(conninfo, timeout=timeout) as conn:
            figures = read_console(conn)
    except DatabaseError as exc:
        return PgbouncerStatus(target, unreachable_report(str(exc)), None, thresholds)
    report = grade(
        figures,
        thresholds,
        query_wait_timeout=cfg.query_wait_timeout if cfg else None,
        max_client_conn=cfg.max_client_conn if cfg else None,
    )
    return PgbouncerStatus(target, report, figures, thresholds)
