"""opsdb heartbeat: one row (time, LSN, txid) on the primary, so drills can measure the point recovered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opsdb.pg import heartbeat as hb
from opsdb.pg.conn import connect as pg_connect

KEEP_DAYS = 90  # rows older than this are pruned on each beat; keep longer than the retention window


def record_heartbeat(
    conninfo: str,
    schema: str = "public",
    *,
    keep_days: int = KEEP_DAYS,
    connect: Callable[..., Any] = pg_connect,
) -> hb.Heartbeat:
    """Insert one heartbeat row on the primary (creating the table on first use) and return it."""
    with connect(conninfo, application_name="opsdb heartbeat") as conn:
        return hb.insert(conn, schema, keep_days=keep_days)
