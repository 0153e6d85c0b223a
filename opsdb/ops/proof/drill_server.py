"""The drill's scratch server: the recovery settings of the restored data directory, starting it and
waiting until it reached the target and was promoted (or saying why not, in the server's own words),
and the recovery point it reached. drill.py runs the drill around it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opsdb.errors import DatabaseError, OpsdbError
from opsdb.model.lsn import Lsn
from opsdb.model.report import FAIL, PASS, Check, RecoveryPoint
from opsdb.model.target import RecoveryTarget
from opsdb.ops.proof.scratch import SCRATCH_SETTINGS, ScratchProvider, ScratchSpace, chown_to
from opsdb.pg.recovery import RECOVERY_SIGNAL, write_recovery

POLL = 0.25  # seconds between promotion checks


def write_recovery_settings(
    target: RecoveryTarget,
    space: ScratchSpace,
    scratch: ScratchProvider,
    *,
    staged: bool,
    restore_command: str,
    os_user: str | None,
) -> None:
    """Recovery settings, signal file and pg_hba.conf of the restored data directory: recover to
    `target`, promote, and take WAL from the staged directory or `restore_command`."""
    settings: dict[str, object] = dict(SCRATCH_SETTINGS)
    settings.update(target.recovery_settings())
    settings["recovery_target_action"] = "promote"
    if staged and scratch.name == "local":
        settings["restore_command"] = f"cp '{space.wal_dir}/%f' '%p'"
    else:
        settings["restore_command"] = scratch.restore_command(space, restore_command)
    os_user = os_user if scratch.name == "local" else None
    # recovery.signal, never standby.signal: a standby would never promote
    write_recovery(space.data_dir, settings, RECOVERY_SIGNAL, os_user=os_user)
    # the scratch server is reachable only from this machine; trust keeps production passwords out of it
    hba = space.data_dir / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")
    chown_to(hba, os_user)
    # tablespace_map would re-point pg_tblspc/<oid> at the production paths (the restorer's links point
    # into the scratch directory instead)
    (space.data_dir / "tablespace_map").unlink(missing_ok=True)


def replay_and_promote(
    space: ScratchSpace,
    scratch: ScratchProvider,
    connect: Callable[..., Any],
    clock: Callable[[], float],
    timeout: float,
    at: Callable[[Lsn], None] | None = None,
) -> Check:
    """Start the server and wait until recovery reached the target and the server was promoted."""
    name = "target reached and promoted"
    deadline = clock() + timeout
    try:
        scratch.start(space, timeout=min(timeout, 3600))
    except OpsdbError as exc:
        return Check(
            name, FAIL, f"the scratch server did not start: {fatal_lines(scratch.log_tail(space)) or exc.message}"
        )
    while clock() < deadline:  # bounded by the drill timeout
        if not scratch.is_running(space):
            return Check(
                name, FAIL, f"the scratch server stopped during recovery: {fatal_lines(scratch.log_tail(space))}"
            )
        try:
            with connect(scratch.conninfo(space), timeout=5) as conn:
                if conn.fetchval("SELECT pg_is_in_recovery()"):
                    replayed = conn.fetchval("SELECT pg_last_wal_replay_lsn()::text")
                    if at is not None and replayed:
                        at(Lsn.parse(replayed))
                else:
                    tli = conn.fetchval(
                        "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
                    )
                    return Check(
                        name, PASS, f"recovery stopped at the target and the server was promoted (timeline {tli})"
                    )
        except DatabaseError:
            pass  # still starting up or shutting down after a FATAL: the next loop looks at the process
        time.sleep(POLL)
    return Check(name, FAIL, f"not promoted within {timeout:g} s: {fatal_lines(scratch.log_tail(space))}")


def fatal_lines(log: str) -> str:
    """The server's own reason: its FATAL/PANIC lines, else the last lines of its log."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    bad = [ln for ln in lines if "FATAL:" in ln or "PANIC:" in ln]
    chosen = bad[-2:] if bad else lines[-2:]
    return " | ".join(ln.split("]", 1)[-1].strip() if "]" in ln else ln for ln in chosen) or "no log output"


def point_reached(conn: Any) -> RecoveryPoint:
    row = conn.fetchone(
        "SELECT pg_last_xact_replay_timestamp() AS replay_time, pg_last_wal_replay_lsn()::text AS lsn, "
        "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline"
    )
    return RecoveryPoint(replay_time=row["replay_time"], lsn=row["lsn"], timeline=row["timeline"])
