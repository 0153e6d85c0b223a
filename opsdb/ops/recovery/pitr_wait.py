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
from opsdb.ops.recovery.replay_progress import segment_start

STARTUP_GRACE = 15.0  # seconds a launched postmaster may take to write its pid file

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


_PROMOTED_RE = re.compile(r"database system is ready to accept connections")
_READ_ONLY_RE = re.compile(r"database system is ready to accept read-only connections|started streaming WAL")
_PAUSED_RE = re.compile(r"pausing at the end of recovery|recovery has paused")
_REDO_DONE_RE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")
_RESTORED_RE = re.compile(r'restored log file "([0-9A-F]{24})" from archive')


def state_from_log(text: str, *, standby: bool) -> str | None:
    """promoted | paused | streaming from the server's own log lines (lc_messages=C), or None.

    The log needs no login: a server whose pg_hba.conf refuses opsdb still says what it did."""
    if standby:
        return "streaming" if _READ_ONLY_RE.search(text) or _PROMOTED_RE.search(text) else None
    if _PROMOTED_RE.search(text):
        return "promoted"
    if _PAUSED_RE.search(text):
        return "paused"
    return None


def replay_progress_from_log(text: str) -> Lsn | None:
    """The start of the newest WAL segment the server restored from the archive (progress when SQL is
    not available)."""
    found = _RESTORED_RE.findall(text)
    return segment_start(found[-1]) if found else None


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
    window: str | None = None,
    on_progress: Callable[[Lsn], None] | None = None,
) -> RecoveryPoint:
    """Poll until the server promoted / paused / shut down at the target (or, for a standby, replays),
    then read the point reached. query(sql) returns one value (raises while the server is unreachable).

    Every poll checks that the postmaster is alive and reads the server log, so a server that stopped
    (a FATAL, a shutdown) fails the wait at once with its own log line, and one that cannot be logged
    into is still seen promoting or pausing. window: the plan's recoverable window, for messages.
    on_progress: the replay position at each poll (ops/recovery/replay_progress.py)."""
    deadline = clock() + timeout
    sql_ok = True
    while True:
        log_text = read_log()
        if not is_running():
            log = parse_log(read_log())
            if action == "shutdown" and not standby and "fatal" not in log:
                return RecoveryPoint(
                    log.get("last_commit"),
                    _redo_done(read_log()),
                    log.get("timeline"),
                    "shutdown",
                    log.get("stop_line"),
                )
            raise _stopped(log, window)
        state = None
        if sql_ok:
            try:
                state = _state_by_sql(query, standby)
                if on_progress is not None and state is None:
                    with contextlib.suppress(Exception):
                        on_progress(Lsn.parse(query("SELECT pg_last_wal_replay_lsn()::text")))
            except Exception as exc:  # any failure: fall back to the log for this poll
                sql_ok = not _is_login_refused(exc)
        if state is None:
            state = state_from_log(log_text, standby=standby)
            if state is None and on_progress is not None and (seg := replay_progress_from_log(log_text)):
                on_progress(seg)
        if state is not None and (standby or state in ("promoted", "paused")):
            return _read_point(state, query if sql_ok else _no_sql, read_log)
        if clock() >= deadline:
            raise OperationFailed(
                f"recovery did not reach its target within {timeout:g} s (server still recovering)",
                hint="the server keeps running: watch its log, or pass a longer --wait-timeout",
            )
        sleep(poll)


def _state_by_sql(query: Callable[[str], Any], standby: bool) -> str | None:
    if standby:
        return "streaming" if query("SELECT pg_is_in_recovery()") else "promoted"
    if not query("SELECT pg_is_in_recovery()"):
        return "promoted"
    if query("SELECT pg_get_wal_replay_pause_state()") == "paused":
        return "paused"
    return None


def _is_login_refused(exc: BaseException) -> bool:
    """An authentication or authorization failure does not go away by retrying: use the log instead."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    text = str(exc).lower()
    return sqlstate.startswith("28") or "authentication failed" in text or "no password supplied" in text


def _no_sql(sql: str) -> Any:
    raise OperationFailed("no SQL connection to the restored server")


def _stopped(log: dict[str, Any], window: str | None) -> OperationFailed:
    fatal = log.get("fatal")
    where = f"; the plan's recoverable window: {window}" if window else ""
    if fatal and "recovery ended before configured recovery target was reached" in fatal:
        hint = "the target is after the last point the archived WAL reaches: restore --latest, or choose a target inside the window"
    else:
        hint = "see the server log beside the data directory; nothing was promoted"
    return OperationFailed(
        f"PostgreSQL stopped during recovery: {fatal or 'it exited without a FATAL line (see the server log)'}{where}",
        hint=hint,
    )


def _redo_done(text: str) -> Lsn | None:
    found = _REDO_DONE_RE.findall(text)
    return Lsn.parse(found[-1]) if found else None


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
    if lsn is None:
        lsn = _redo_done(read_log())
    return RecoveryPoint(commit, lsn, log.get("timeline") or timeline, state, log.get("stop_line"))


def start_and_wait(
    instance: Any,
    target: RecoveryTarget,
    *,
    standby: bool,
    connect: Any,
    timeout: float,
    conninfo: str | None = None,
    window: str | None = None,
    on_progress: Callable[[Lsn], None] | None = None,
) -> RecoveryPoint:
    """Start the restored server and wait until it reached the target (promoted, paused or shut down as
    asked) or, for a standby, until it accepts read-only connections. connect(conninfo) -> PgConnection.

    The server is launched without pg_ctl's own wait, and only the log it writes from this start on
    is read. conninfo: how to reach it (default: instance.conninfo())."""
    action = "promote" if target.kind == "latest" else target.action
    offset = instance.log_size()
    launched = time.monotonic()
    instance.launch()
    where = conninfo or instance.conninfo()
    seen_running = False

    def is_running() -> bool:
        # pg_ctl -W returns before the postmaster wrote its pid file: give it a moment, unless it
        # already logged why it stopped
        nonlocal seen_running
        if instance.is_running():
            seen_running = True
            return True
        starting = not seen_running and time.monotonic() - launched < STARTUP_GRACE
        return starting and "fatal" not in parse_log(read_log())

    def query(sql: str) -> Any:
        with connect(where, timeout=3) as conn:
            return conn.fetchval(sql)

    def read_log() -> str:
        text: str = instance.log_since(offset)
        return text

    return wait_for_target(
        action=action,
        standby=standby,
        query=query,
        is_running=is_running,
        read_log=read_log,
        timeout=timeout,
        window=window,
        on_progress=on_progress,
    )
