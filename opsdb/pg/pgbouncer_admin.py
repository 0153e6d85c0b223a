"""PgBouncer's admin console (the virtual `pgbouncer` database): SHOW commands over the simple protocol.

The console speaks only the simple query protocol and only its own commands, so every call goes
through pg.conn.connect_simple and a fixed allow-list of SHOW subjects (no SQL is built from input).
"""

from __future__ import annotations

from typing import Any

from opsdb.errors import UsageError
from opsdb.pg.conn import PgConnection, connect_simple

SHOW_SUBJECTS = frozenset(
    {"POOLS", "STATS", "STATS_TOTALS", "DATABASES", "USERS", "CLIENTS", "SERVERS", "CONFIG", "LISTS", "VERSION"}
)


def open_console(conninfo: str, *, timeout: float = 5) -> PgConnection:
    return connect_simple(conninfo, timeout=timeout)


def show(conn: PgConnection, subject: str) -> list[dict[str, Any]]:
    """`SHOW <subject>` rows as dicts."""
    name = subject.upper()
    if name not in SHOW_SUBJECTS:
        raise UsageError(f"unsupported admin console command SHOW {subject}")
    return conn.fetchall(f"SHOW {name}")


def version(conn: PgConnection) -> str:
    rows = show(conn, "VERSION")
    return str(next(iter(rows[0].values()))) if rows else ""


def config(conn: PgConnection) -> dict[str, str]:
    """SHOW CONFIG as key -> value (the running values, which may differ from the file)."""
    return {str(row["key"]): str(row["value"]) for row in show(conn, "CONFIG")}


def lists(conn: PgConnection) -> dict[str, int]:
    """SHOW LISTS as list name -> items (used_clients, free_clients, used_servers, ...)."""
    return {str(row["list"]): int(row["items"]) for row in show(conn, "LISTS")}
