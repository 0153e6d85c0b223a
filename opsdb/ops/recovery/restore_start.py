"""`opsdb restore --start`: start the restored server, watch it to its target, prove where it stopped.

The server is started without pg_ctl's wait and watched (ops/recovery/pitr_wait.py): each poll checks the
postmaster and reads the server log, so a FATAL, a shutdown or a pause is seen within a second. It
listens on a private Unix socket beside its data directory (for this start only), and opsdb logs in
there as the cluster's conninfo user with that conninfo's password, else as the server's OS user;
when pg_hba.conf still refuses, the server's own log says when it promoted, so no authentication
setup can make opsdb wait. A promotion short of the planned end (the end of the archived WAL for
--latest) fails the restore.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from opsdb.errors import OperationFailed, UsageError
from opsdb.model.catalog import RestorePlan
from opsdb.model.lsn import Lsn
from opsdb.model.target import RecoveryTarget
from opsdb.ops.common.phases import phase
from opsdb.ops.recovery.replay_progress import OnReplay, reporter, span_of_restore
from opsdb.pg.conninfo import make_conninfo, parse_conninfo
from opsdb.pg.instance import Instance
from opsdb.proc import Runner

SOCKET_PATH_MAX = 90  # sun_path holds 107 bytes; ".s.PGSQL.NNNNN.lock" needs the rest


def socket_dir_for(target: Path) -> Path:
    """Beside the data directory (like its log), or a private temporary directory when that path is
    too long for a Unix socket."""
    beside = target.with_name(target.name + ".sock")
    if len(str(beside)) <= SOCKET_PATH_MAX:
        return beside
    return Path(tempfile.mkdtemp(prefix="opsdb-sock-"))


def login_conninfo(socket_dir: Path, port: int, cluster_conninfo: str | None, os_user: str | None) -> str:
    """host = the private socket; user and password from the cluster's conninfo, else the OS user."""
    params: dict[str, str] = {}
    if cluster_conninfo:
        try:
            params = parse_conninfo(cluster_conninfo)
        except Exception:  # a conninfo opsdb cannot parse only loses its credentials here
            params = {}
    out = {"host": str(socket_dir), "port": str(port), "dbname": "postgres"}
    out["user"] = params.get("user") or os_user or "postgres"
    for key in ("password", "passfile"):
        if params.get(key):
            out[key] = params[key]
    return make_conninfo(out)


def start_restored(
    plan: RestorePlan,
    request: Any,
    runner: Runner,
    on_progress: OnReplay | None = None,
) -> dict[str, Any]:
    """Start the restored server, wait for its target, return the point it reached (to_json form).
    on_progress: (WAL bytes replayed, WAL bytes to replay) at each poll (ops/recovery/replay_progress.py)."""
    from opsdb.ops.recovery.pitr_wait import start_and_wait
    from opsdb.pg.conn import connect  # psycopg (~8 MB RSS) only when a server is started

    if request.bin_dir is None or plan.port is None:
        raise UsageError("--start needs the PostgreSQL binaries and --port")
    target_dir = Path(plan.target_dir)
    sockets = socket_dir_for(target_dir)
    instance = Instance(target_dir, plan.port, request.bin_dir, request.os_user, runner, socket_dir=sockets)
    recovery = plan.recovery or {}
    window = recovery.get("window")
    window_text = (
        f"{window['from']} (LSN {window['from_lsn']}) .. {window['to']} (LSN {window['to_lsn']})" if window else None
    )
    target = request.recovery or RecoveryTarget()
    if recovery.get("gap"):
        target = RecoveryTarget("latest", timeline=target.timeline)  # accepted: replay up to the gap
    span = span_of_restore(plan.backup, plan.recovery)
    phase(
        "restore",
        "replay",
        port=plan.port,
        target=target.label(),
        from_lsn=span and span.start,
        to_lsn=span and span.end,
        replay_bytes=span and span.total,
    )
    try:
        point = start_and_wait(
            instance,
            target,
            standby=request.standby,
            connect=connect,
            timeout=request.start_timeout,
            conninfo=login_conninfo(sockets, plan.port, request.conninfo, request.os_user),
            window=window_text,
            on_progress=reporter(span, on_progress),
        )
    except OperationFailed as exc:
        left = f"{target_dir} was not promoted (recovery.signal is still there): remove it before restoring again"
        raise OperationFailed(exc.message, hint=f"{exc.hint}; {left}" if exc.hint else left) from None
    reached = point.to_json()
    check_reached_planned_end(recovery, reached, instance.log_path)
    phase(
        "restore",
        "reached",
        state=reached.get("state"),
        lsn=reached.get("lsn"),
        time=reached.get("time"),
        timeline=reached.get("timeline"),
    )
    return reached


def check_reached_planned_end(recovery: dict[str, Any], reached: dict[str, Any], log_path: Path) -> None:
    """For --latest: the promoted server must have replayed up to the last record the plan found in the
    archived WAL; stopping before means WAL the plan saw was not replayed (deleted since, or refused)."""
    reaches = recovery.get("reaches") or {}
    window = recovery.get("window") or {}
    if (recovery.get("target") or {}).get("kind") != "latest" or window.get("end_from") != "records":
        return
    planned = reaches.get("lsn")
    got = reached.get("lsn")
    if not planned or not got or reached.get("state") != "promoted":
        return
    if Lsn.parse(got) < Lsn.parse(planned):
        raise OperationFailed(
            f"recovery ended at LSN {got}, short of the end of the archived WAL the plan found (LSN {planned}): "
            "the server was promoted early",
            hint=f"do not use this copy; see {log_path}, run `opsdb verify`, and restore again",
        )
