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


def announce_total(on_bytes: Any, total: int | None) -> None:
    """Hand a total to a progress callback that takes one (`set_total`); plain callables are left alone."""
    set_total = getattr(on_bytes, "set_total", None)
    if callable(set_total) and total:
        set_total(total)
