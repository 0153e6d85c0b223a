"""Sizes known or estimable before the work starts: the totals behind progress percentages and ETAs.

An estimate that cannot be made is None (the progress shows amounts and rates without a percentage);
it never fails the command it only decorates.
"""

from __future__ import annotations

from typing import Any

from opsdb.errors import OpsdbError


def backup_bytes(conninfo: str) -> int | None:
    """A base backup's size: the sum of the databases' sizes (pg_basebackup adds little else)."""
    from opsdb.pg.conn import connect

    try:
        with connect(conninfo) as conn:
            total = conn.fetchval("SELECT sum(pg_database_size(oid))::bigint FROM pg_database WHERE datallowconn")
    except OpsdbError:
        return None
    return int(total) if total else None


# pg_dump writes rows, not indexes: the tables' heap and TOAST, system catalogs left out
_TABLE_DATA = (
    "SELECT coalesce(sum(pg_table_size(c.oid)), 0)::bigint FROM pg_class c JOIN pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
)


def dump_bytes(conninfo: str, databases: tuple[str, ...] = ()) -> int | None:
    """A logical dump's size, estimated: the dumped databases' table data (all non-template ones when
    none are named). Rows as text differ from rows in pages, so the bar may end early or grow past it."""
    from opsdb.pg.conn import connect
    from opsdb.pg.conninfo import with_dbname

    total = 0
    try:
        if not databases:
            with connect(conninfo) as conn:
                databases = tuple(conn.databases(exclude_templates=True))
        for name in databases:
            with connect(with_dbname(conninfo, name)) as conn:
                total += int(conn.fetchval(_TABLE_DATA) or 0)
    except OpsdbError:
        return None
    return total or None


def announce_total(on_bytes: Any, total: int | None) -> None:
    """Hand a total to a progress callback that takes one (`set_total`); plain callables are left alone."""
    set_total = getattr(on_bytes, "set_total", None)
    if callable(set_total) and total:
        set_total(total)
