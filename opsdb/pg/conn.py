"""The only psycopg importer: connections with dict rows and typed helpers.

Every psycopg error becomes a DatabaseError carrying PostgreSQL's own message, with the connection
string redacted ("unable to connect to host=... user=...: <server message>"). A password never appears
in a message, even if the server or libpq were to echo it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from opsdb.errors import DatabaseError
from opsdb.pg.conninfo import SECRET_KEYS, parse_conninfo, redact

Params = Sequence[Any] | dict[str, Any] | None


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    # libpq's connection errors span lines ("connection to server ... failed: ...\n\tIs the server running...")
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _secrets(conninfo: str) -> list[str]:
    try:
        params = parse_conninfo(conninfo)
    except Exception:  # an unparseable string: psycopg will refuse it too; scrub nothing known
        return []
    return [v for k, v in params.items() if k in SECRET_KEYS and v]


def _db_error(prefix: str, exc: BaseException, secrets: list[str]) -> DatabaseError:
    err = DatabaseError(_scrub(f"{prefix}: {_message(exc)}", secrets))
    err.sqlstate = getattr(exc, "sqlstate", None)  # type: ignore[attr-defined]  # only DatabaseErrors from here carry it
    return err


class PgConnection:
    """One open connection. Rows are dicts; use as a context manager to close it."""

    def __init__(self, raw: psycopg.Connection[dict[str, Any]], secrets: list[str], target: str) -> None:
        self._conn = raw
        self._secrets = secrets
        self.target = target  # redacted conninfo, for messages

    # --- queries ---------------------------------------------------------------------------------

    def _run(self, sql: str, params: Params) -> psycopg.Cursor[dict[str, Any]]:
        try:
            return self._conn.execute(sql, params)
        except psycopg.Error as exc:
            raise _db_error("query failed", exc, self._secrets) from None

    def execute(self, sql: str, params: Params = None) -> int:
        """Run a statement; returns the affected row count (-1 when not applicable)."""
        return self._run(sql, params).rowcount

    def fetchall(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        cur = self._run(sql, params)
        try:
            return cur.fetchall()
        except psycopg.Error as exc:
            raise _db_error("query failed", exc, self._secrets) from None

    def fetchone(self, sql: str, params: Params = None) -> dict[str, Any] | None:
        cur = self._run(sql, params)
        try:
            return cur.fetchone()
        except psycopg.Error as exc:
            raise _db_error("query failed", exc, self._secrets) from None

    def fetchval(self, sql: str, params: Params = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self.fetchone(sql, params)
        return None if row is None else next(iter(row.values()))

    def alter_system(self, name: str, value: str | int | float | bool | None) -> None:
        """ALTER SYSTEM SET name = value (RESET when value is None); utility statements take no bind
        parameters, so the value is quoted client-side as a literal. Follow with reload() or a restart."""
        if value is None:
            stmt = pgsql.SQL("ALTER SYSTEM RESET {}").format(pgsql.Identifier(name))
        else:
            text = ("on" if value else "off") if isinstance(value, bool) else str(value)
            stmt = pgsql.SQL("ALTER SYSTEM SET {} = {}").format(pgsql.Identifier(name), pgsql.Literal(text))
        try:
            self._conn.execute(stmt)
        except psycopg.Error as exc:
            raise _db_error("query failed", exc, self._secrets) from None

    def reload(self) -> None:
        """pg_reload_conf(): reloadable settings take effect (asynchronously, within moments)."""
        self.fetchval("SELECT pg_reload_conf()")

    def close(self) -> None:
        self._conn.close()

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- typed helpers -------------------------------------------------------------------------------

    def server_version_num(self) -> int:
        """e.g. 150007 for 15.7."""
        return int(self._conn.info.server_version)

    def server_major(self) -> int:
        return self.server_version_num() // 10000

    def server_version(self) -> str:
        """The human version string, e.g. '15.7 (Debian 15.7-0+deb12u1)'."""
        return str(self.fetchval("SHOW server_version"))

    def settings(self, names: Iterable[str]) -> dict[str, str | None]:
        """Current values from pg_settings; a name the server does not know (or hides) maps to None."""
        wanted = list(names)
        rows = self.fetchall("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (wanted,))
        found = {r["name"]: r["setting"] for r in rows}
        return {n: found.get(n) for n in wanted}

    def in_recovery(self) -> bool:
        return bool(self.fetchval("SELECT pg_is_in_recovery()"))

    def system_identifier(self) -> int:
        return int(self.fetchval("SELECT system_identifier FROM pg_control_system()"))

    def current_wal_lsn(self) -> str:
        """The current WAL position: insert LSN on a primary, last replayed LSN on a standby."""
        return str(
            self.fetchval(
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text"
            )
        )

    def timeline(self) -> int:
        return int(self.fetchval("SELECT timeline_id FROM pg_control_checkpoint()"))

    def live_timeline(self) -> int:
        """The timeline WAL is written (primary) or replayed (standby) on now. pg_control_checkpoint()
        lags behind a promotion until the next checkpoint; the current WAL file's name does not."""
        return int(
            self.fetchval(
                "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) "
                "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
            )
        )

    def databases(self, exclude_templates: bool = True) -> list[str]:
        sql = "SELECT datname FROM pg_database WHERE datallowconn"
        if exclude_templates:
            sql += " AND NOT datistemplate"
        return [r["datname"] for r in self.fetchall(sql + " ORDER BY datname")]

    def tablespaces(self) -> list[dict[str, Any]]:
        """User tablespaces: [{"oid": int, "name": str, "location": str}] (pg_default/pg_global left out)."""
        return self.fetchall(
            "SELECT oid::int AS oid, spcname AS name, pg_tablespace_location(oid) AS location "
            "FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname"
        )

    def data_directory(self) -> str:
        return str(self.fetchval("SHOW data_directory"))

    def archiver_stats(self) -> dict[str, Any]:
        """pg_stat_archiver's row (archived_count, last_archived_wal/time, failed_count, last_failed_wal/time)."""
        return self.fetchone("SELECT * FROM pg_stat_archiver") or {}


def connect(
    conninfo: str,
    *,
    timeout: float = 10,
    autocommit: bool = True,
    application_name: str = "opsdb",
    simple_protocol: bool = False,
) -> PgConnection:
    """Open a connection (the password, if any, goes to libpq in-process, never to a child's argv)."""
    secrets = _secrets(conninfo)
    target = redact(conninfo)
    simple: dict[str, Any] = {"cursor_factory": psycopg.ClientCursor} if simple_protocol else {}
    try:
        raw = psycopg.connect(
            conninfo,
            autocommit=autocommit or simple_protocol,
            row_factory=dict_row,
            connect_timeout=max(1, int(round(timeout))),
            application_name=application_name,
            **simple,
        )
    except psycopg.Error as exc:
        err = _db_error(f"unable to connect to {target}", exc, secrets)
        err.message = err.message.replace(": connection failed: ", ": ", 1)
        err.args = (err.message,)
        raise err from None
    except ValueError as exc:  # e.g. a malformed conninfo rejected before libpq
        raise _db_error(f"unable to connect to {target}", exc, secrets) from None
    return PgConnection(raw, secrets, target)


def connect_simple(conninfo: str, *, timeout: float = 10, application_name: str = "opsdb") -> PgConnection:
    """A connection that sends every query with the simple query protocol (psycopg ClientCursor,
    autocommit), for PgBouncer's admin console, which rejects the extended protocol (psycopg#817)."""
    return connect(conninfo, timeout=timeout, application_name=application_name, simple_protocol=True)
