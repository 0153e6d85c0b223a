"""`opsdb pgbouncer status` graded: the admin console's figures -> OK/WARNING/CRITICAL/UNKNOWN.

Pure: takes the rows of SHOW POOLS/DATABASES/LISTS/CONFIG, returns a CheckReport (model.results,
monitoring-plugin exit codes). The checks:

- wait:    a pool with clients waiting for a server connection. Its `maxwait` (+ `maxwait_us`) is how
           long the oldest of them has waited. WARNING from `status_wait_warning` seconds; CRITICAL
           from `status_wait_critical`, by default half the running pgbouncer's query_wait_timeout
           (past that, clients start getting "query_wait_timeout" errors soon). Waiting less than
           the warning threshold is normal for a busy transaction pool and stays OK.
- clients: client connections in use (SHOW LISTS used_clients) against max_client_conn, in percent;
           at 100% pgbouncer refuses new clients ("no more connections allowed").
- paused:  a database that is PAUSEd or DISABLEd is WARNING (its clients wait or are refused).

The admin console's own pool (database "pgbouncer") is left out of every check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from opsdb.model.results import CheckReport, Status

ADMIN_DB = "pgbouncer"
# used when neither the config nor the running pgbouncer gives a critical wait (query_wait_timeout = 0)
FALLBACK_WAIT_CRITICAL = 60.0


@dataclasses.dataclass(frozen=True)
class StatusThresholds:
    wait_warning: float = 5.0
    wait_critical: float | None = None  # None: query_wait_timeout / 2
    clients_warning_pct: float = 80.0
    clients_critical_pct: float = 95.0


@dataclasses.dataclass(frozen=True)
class ConsoleFigures:
    """What the admin console said (rows as dicts, numbers as int/float)."""

    version: str
    pools: list[dict[str, Any]]
    stats: list[dict[str, Any]]
    databases: list[dict[str, Any]]
    lists: dict[str, int]  # SHOW LISTS: list name -> items
    config: dict[str, str]  # SHOW CONFIG: key -> value ({} when the console refused it)


def plain(value: Any) -> Any:
    """Decimal (psycopg's numeric) -> int or float, so JSON carries numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def plain_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: plain(v) for k, v in row.items()} for row in rows]


def pool_wait_seconds(pool: Mapping[str, Any]) -> float:
    return float(pool.get("maxwait") or 0) + float(pool.get("maxwait_us") or 0) / 1e6


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def wait_critical(thresholds: StatusThresholds, query_wait_timeout: float | None) -> tuple[float, str]:
    """The critical wait and where it came from."""
    if thresholds.wait_critical is not None:
        return thresholds.wait_critical, "status_wait_critical"
    if query_wait_timeout:
        return query_wait_timeout / 2, f"query_wait_timeout {query_wait_timeout:g}s / 2"
    return FALLBACK_WAIT_CRITICAL, "query_wait_timeout is 0 (wait forever): fixed"


def _grade_wait(report: CheckReport, pools: list[dict[str, Any]], t: StatusThresholds, qwt: float | None) -> None:
    critical, why = wait_critical(t, qwt)
    waiting = [p for p in pools if int(p.get("cl_waiting") or 0) > 0]
    if not waiting:
        report.add("wait", Status.OK, "no client is waiting for a server connection")
        return
    worst = max(waiting, key=pool_wait_seconds)
    seconds = pool_wait_seconds(worst)
    total = sum(int(p["cl_waiting"]) for p in waiting)
    detail = (
        f"{total} client(s) waiting in {len(waiting)} pool(s); longest {seconds:.1f}s in "
        f"{worst.get('database')}/{worst.get('user')} (warning {t.wait_warning:g}s, critical {critical:g}s = {why})"
    )
    if seconds >= critical:
        status = Status.CRITICAL
    elif seconds >= t.wait_warning:
        status = Status.WARNING
    else:
        status = Status.OK
    report.add("wait", status, detail)


def _grade_clients(report: CheckReport, used: int | None, max_conn: float | None, t: StatusThresholds) -> None:
    if used is None or not max_conn:
        report.add("clients", Status.UNKNOWN, "client connections or max_client_conn not reported")
        return
    pct = 100.0 * used / max_conn
    detail = (
        f"{used} of max_client_conn {max_conn:g} client connections ({pct:.0f}%; "
        f"warning {t.clients_warning_pct:g}%, critical {t.clients_critical_pct:g}%)"
    )
    if pct >= t.clients_critical_pct:
        status = Status.CRITICAL
    elif pct >= t.clients_warning_pct:
        status = Status.WARNING
    else:
        status = Status.OK
    report.add("clients", status, detail)


def _grade_paused(report: CheckReport, databases: list[dict[str, Any]]) -> None:
    stopped = [
        f"{d.get('name')} ({'paused' if int(d.get('paused') or 0) else 'disabled'})"
        for d in databases
        if d.get("name") != ADMIN_DB and (int(d.get("paused") or 0) or int(d.get("disabled") or 0))
    ]
    if stopped:
        report.add("paused", Status.WARNING, f"not serving: {', '.join(stopped)} (RESUME / ENABLE on the console)")
    else:
        report.add("paused", Status.OK, "no database paused or disabled")


def grade(
    figures: ConsoleFigures,
    thresholds: StatusThresholds,
    *,
    query_wait_timeout: float | None = None,
    max_client_conn: float | None = None,
) -> CheckReport:
    """The checks. The running pgbouncer's SHOW CONFIG wins over the given (configured) fallbacks."""
    qwt = _number(figures.config.get("query_wait_timeout"))
    max_conn = _number(figures.config.get("max_client_conn"))
    pools = [p for p in figures.pools if p.get("database") != ADMIN_DB]
    report = CheckReport()
    report.add("console", Status.OK, f"admin console answered ({figures.version})")
    _grade_wait(report, pools, thresholds, qwt if qwt is not None else query_wait_timeout)
    used = figures.lists.get("used_clients")
    _grade_clients(report, used, max_conn if max_conn is not None else max_client_conn, thresholds)
    _grade_paused(report, figures.databases)
    return report


def unreachable(message: str) -> CheckReport:
    """No figures: CRITICAL when nothing answered (pgbouncer down), UNKNOWN when pgbouncer answered
    but refused the login (a monitoring-user problem, not an outage)."""
    answered = "FATAL" in message or "ERROR" in message
    report = CheckReport()
    if answered:
        report.add("console", Status.UNKNOWN, f"pgbouncer refused the admin console login: {message}")
    else:
        report.add("console", Status.CRITICAL, f"pgbouncer not reachable: {message}")
    return report
