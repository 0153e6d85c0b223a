"""Watching a restored server recover: wait until it reached its target (promoted, paused, shut down) or
streams, then read the point it actually reached (last replayed commit time, LSN, timeline).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opsdb.errors import OperationFailed
from opsdb.model.lsn import Lsn
from opsdb.model.target import RecoveryTarget, format_time

# --- waiting for the target ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RecoveryPoint:
    """What the server reached: last replayed commit time and LSN, its timeline and state."""

    time: datetime | None
    lsn: Lsn | None
    timeline: int | None
    state: str  # promoted | paused | shutdown | streaming | recovering
    stop_line: str | None = None  # the server's "recovery stopping ..." log line, when logged

    def to_json(self) -> dict[str, Any]:
        return {
            "time": format_time(self.time) if self.time else None,
            "lsn": str(self.lsn) if self.lsn else None,
            "timeline": self.timeline,
            "state": self.state,
        }


_STOP_RE = re.compile(r"recovery stopping (?:before|after) .*")
_LAST_TX_RE = re.compile(r"last completed transaction was at log time (.+)$", re.M)
_NEW_TLI_RE = re.compile(r"selected new timeline ID: (\d+)")
_FATAL_RE = re.compile(r"(?:FATAL|PANIC):\s+(.*)")


def parse_log(text: str) -> dict[str, Any]:
    """What the server log (lc_messages=C) says about the end of recovery."""
    found: dict[str, Any] = {}
    if m := list(_STOP_RE.finditer(text)):
        found["stop_line"] = m[-1].group(0).strip()
    if m := list(_LAST_TX_RE.finditer(text)):
        found["last_commit"] = _pg_time(m[-1].group(1).strip())
    if m := list(_NEW_TLI_RE.finditer(text)):
        found["timeline"] = int(m[-1].group(1))
    if m := list(_FATAL_RE.finditer(text)):
        found["fatal"] = m[-1].group(1).strip()
    return found


def _pg_time(text: str) -> datetime | None:
    """'2026-11-21 10:15:00.123456+00' (PostgreSQL's timestamptz output) -> aware datetime."""
    raw = text.strip()
    if re.search(r"[+-]\d\d$", raw):
        raw += ":00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def wait_for_target(
    *,
    action: str,
    standby: bool,
    query: Callable[[str], Any],
    is_running: Callable[[], bool],
    read_log: Callable[[], str],
    timeout: float,
    poll: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RecoveryPoint:
    """Poll until the server promoted / paused / shut down at the target (or, for a standby, replays),
    then read the point reached. query(sql) returns one value (raises while the server is unreachable)."""
    deadline = clock() + timeout
    while True:
        running = is_running()
        if not running:
            log = parse_log(read_log())
            if action == "shutdown" and not standby and "fatal" not in log:
                return RecoveryPoint(
                    log.get("last_commit"), None, log.get("timeline"), "shutdown", log.get("stop_line")
                )
            raise OperationFailed(
                f"PostgreSQL stopped during recovery: {log.get('fatal', 'see the server log')}",
                hint="recovery ended before the target? check the target against `opsdb info`",
            )
        state = None
        with contextlib.suppress(Exception):
            if standby:
                state = "streaming" if query("SELECT pg_is_in_recovery()") else "promoted"
            elif not query("SELECT pg_is_in_recovery()"):
                state = "promoted"
            elif query("SELECT pg_get_wal_replay_pause_state()") == "paused":
                state = "paused"
        if state is not None and (standby or state in ("promoted", "paused")):
            return _read_point(state, query, read_log)
        if clock() >= deadline:
            raise OperationFailed(f"recovery did not reach its target within {timeout:g} s (server still recovering)")
        sleep(poll)


def _read_point(state: str, query: Callable[[str], Any], read_log: Callable[[], str]) -> RecoveryPoint:
    log = parse_log(read_log())
    commit = None
    lsn = None
    timeline = None
    with contextlib.suppress(Exception):
        # static after recovery ends, so it is still the point reached after promotion
        commit = query("SELECT pg_last_xact_replay_timestamp()")
    with contextlib.suppress(Exception):
        value = query("SELECT pg_last_wal_replay_lsn()::text")
        lsn = Lsn.parse(value) if value else None
    with contextlib.suppress(Exception):
        timeline = int(query("SELECT timeline_id FROM pg_control_checkpoint()"))
    if isinstance(commit, datetime):
        commit = commit if commit.tzinfo else commit.replace(tzinfo=UTC)
    else:
        commit = log.get("last_commit")
    return RecoveryPoint(commit, lsn, log.get("timeline") or timeline, state, log.get("stop_line"))


def start_and_wait(
    instance: Any, target: RecoveryTarget, *, standby: bool, connect: Any, timeout: float
) -> RecoveryPoint:
    """Start the restored server and wait until it reached the target (promoted, paused or shut down as
    asked) or, for a standby, until it accepts read-only connections. connect(conninfo) -> PgConnection."""
    from opsdb.errors import ToolError

    action = "promote" if target.kind == "latest" else target.action
    try:
        instance.start(timeout=timeout)
    except ToolError:
        if not (action == "shutdown" and not instance.is_running()):
            raise  # carries the server log's tail

    def query(sql: str) -> Any:
        with connect(instance.conninfo(), timeout=5) as conn:
            return conn.fetchval(sql)

    def read_log() -> str:
        return instance.log_tail(256 * 1024)

    return wait_for_target(
        action=action,
        standby=standby,
        query=query,
        is_running=instance.is_running,
        read_log=read_log,
        timeout=timeout,
    )
