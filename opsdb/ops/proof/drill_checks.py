"""The proofs a drill runs against its restored scratch server. Each returns one Check (pass/fail + detail).

They never raise for what they find: a failing proof is a result, not an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opsdb.errors import OpsdbError
from opsdb.model.report import FAIL, PASS, Check
from opsdb.pg import heartbeat as hb
from opsdb.pg.tools import PgTools
from opsdb.proc import Runner

# A heartbeat row commits a few milliseconds after its beat_time; a target that falls in between
# legitimately excludes it. Rows older than this before the target must be present.
COMMIT_LAG = timedelta(seconds=1)
# For a "latest" drill: rows whose insert LSN is this far before the end of the archived WAL must be present.
LSN_MARGIN = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Assertion:
    name: str
    database: str
    sql: str
    expect: str


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:] if ln.strip())


def pg_verifybackup(tools: PgTools, runner: Runner, data_dir: Path, run_as: str | None) -> Check | None:
    """pg_verifybackup on the extracted files (before the server touches them); None when no manifest."""
    if not (data_dir / "backup_manifest").is_file():
        return None
    # -n: WAL comes from the archive during replay (and is proven by it), not from pg_wal
    cmd = tools.pg_verifybackup(str(data_dir), no_parse_wal=True, run_as=run_as, timeout=3600)
    done = runner.run(cmd, check=False, doing="verifying the restored files against backup_manifest")
    if done.returncode == 0:
        return Check("pg_verifybackup", PASS, "every file matches backup_manifest (names, sizes, checksums)")
    return Check("pg_verifybackup", FAIL, _tail(done.stderr.decode("utf-8", "replace") or f"exit {done.returncode}"))


def pg_amcheck(tools: PgTools, runner: Runner, conninfo: str, run_as: str | None) -> Check:
    """Heap and btree checks over every database; installs the amcheck extension where missing."""
    cmd = tools.pg_amcheck(conninfo, all_databases=True, extra=("--install-missing",), run_as=run_as, timeout=6 * 3600)
    done = runner.run(cmd, check=False, doing="checking heap and btree relations with pg_amcheck")
    out = (done.stdout + done.stderr).decode("utf-8", "replace")
    if done.returncode == 0:
        return Check("pg_amcheck", PASS, "heap and btree relations of all databases: no corruption found")
    return Check("pg_amcheck", FAIL, f"exit {done.returncode}: {_tail(out) or 'no output'}")


def recovery_point(
    restored: Any,
    schema: str,
    *,
    target_kind: str,
    target_time: datetime,
    primary: Any | None,
    archive_end_lsn: str | None,
) -> tuple[Check, hb.Heartbeat | None]:
    """The newest heartbeat present must be the newest one at or before the target, and none later.

    `primary` (a connection, or None when it cannot be reached) supplies the rows that must be there."""
    name = "recovery point"
    if not hb.table_exists(restored, schema):
        return Check(
            name,
            FAIL,
            f"no {schema}.{hb.TABLE} table in the restored data: run `opsdb heartbeat` every minute "
            "so drills can measure the point reached",
        ), None
    got = hb.newest(restored, schema)
    if got is None:
        return Check(name, FAIL, "the heartbeat table is empty in the restored data"), None
    later = hb.first_after(restored, schema, target_time)
    if later is not None:
        return Check(
            name, FAIL, f"heartbeat {later.id} at {later.time.isoformat()} is after the target: recovery went too far"
        ), got
    if primary is None:
        return Check(
            name,
            PASS,
            f"newest heartbeat {got.time.isoformat()} (id {got.id}); none after the target "
            "(primary not reachable: presence of earlier rows not cross-checked)",
        ), got
    if target_kind == "latest" and archive_end_lsn:
        must = primary.fetchone(
            f"SELECT id, beat_time, lsn::text AS lsn, txid FROM {hb.table_name(schema)} "
            "WHERE lsn + %s < %s::pg_lsn ORDER BY lsn DESC LIMIT 1",
            (LSN_MARGIN, archive_end_lsn),
        )
        reason = f"archived up to {archive_end_lsn}"
    else:
        must = primary.fetchone(
            f"SELECT id, beat_time, lsn::text AS lsn, txid FROM {hb.table_name(schema)} "
            "WHERE beat_time <= %s ORDER BY beat_time DESC, id DESC LIMIT 1",
            (target_time - COMMIT_LAG,),
        )
        reason = "at or before the target"
    expected = hb.Heartbeat.of(must) if must else None
    if expected is not None and (got.time, got.id) < (expected.time, expected.id):
        return Check(
            name,
            FAIL,
            f"newest heartbeat present is {got.time.isoformat()} (id {got.id}) but the primary has "
            f"{expected.time.isoformat()} (id {expected.id}) {reason}: data is missing",
        ), got
    return Check(
        name,
        PASS,
        f"newest heartbeat {got.time.isoformat()} (id {got.id}) is the newest {reason} on the primary; "
        "none later is present",
    ), got


def _as_text(value: Any) -> str:
    """Render a value the way psql prints it (t/f for booleans), so `expect = "t"` reads naturally."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def assertions(connect: Callable[[str], Any], items: Sequence[Assertion]) -> list[Check]:
    checks = []
    for item in items:
        label = f"assertion: {item.name}"
        try:
            with connect(item.database) as conn:
                got = _as_text(conn.fetchval(item.sql))
        except OpsdbError as exc:
            checks.append(Check(label, FAIL, f"{item.database}: {exc.message}"))
            continue
        status = PASS if got == item.expect else FAIL
        checks.append(Check(label, status, f"{item.database}: {item.sql!r} returned {got!r}, expected {item.expect!r}"))
    return checks


def largest_tables(connect: Callable[[str], Any], databases: Sequence[str], limit: int) -> Check:
    """Row counts of the largest tables across databases (read in full: a damaged page fails the count)."""
    if limit <= 0:
        return Check("row counts", PASS, "disabled (drill.largest_tables = 0)")
    sizes: list[tuple[int, str, str]] = []
    try:
        for db in databases:
            with connect(db) as conn:
                for row in conn.fetchall(
                    "SELECT format('%%I.%%I', n.nspname, c.relname) AS name, pg_relation_size(c.oid) AS size "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "AND n.nspname NOT LIKE 'pg_toast%%' ORDER BY size DESC LIMIT %s",
                    (limit,),
                ):
                    sizes.append((int(row["size"]), db, row["name"]))
        counted = []
        for _size, db, table in sorted(sizes, reverse=True)[:limit]:
            with connect(db) as conn:
                counted.append(f"{db}.{table}: {int(conn.fetchval(f'SELECT count(*) FROM {table}')):,}")
    except OpsdbError as exc:
        return Check("row counts", FAIL, exc.message)
    return Check("row counts", PASS, "; ".join(counted) if counted else "no user tables")


def replay_reached(planned_end: Any, reached_lsn: str | None, target_kind: str, log: str) -> Check:
    """The drill fails when replay ended short of its planned target: for the latest target the end of
    the archived WAL on the timeline, for a time the server's own "recovery stopping" line."""
    from opsdb.model.lsn import Lsn
    from opsdb.ops.recovery.pitr_wait import parse_log

    name = "replay reached the planned target"
    if target_kind == "latest":
        if planned_end is None:
            return Check(name, PASS, "no archived WAL after the backup: the backup's own end was the target")
        if reached_lsn is None:
            return Check(name, FAIL, "the server did not say which LSN it replayed to")
        if Lsn.parse(reached_lsn) < planned_end:
            return Check(
                name,
                FAIL,
                f"replay ended at LSN {reached_lsn}, short of the end of the archived WAL (LSN {planned_end}): "
                "a real restore would lose the WAL after that point",
            )
        return Check(name, PASS, f"replayed to LSN {reached_lsn}, the end of the archived WAL (LSN {planned_end})")
    stop = parse_log(log).get("stop_line")
    if stop is None:
        return Check(name, FAIL, "the server never logged stopping at the target (recovery ran to the end of WAL)")
    return Check(name, PASS, stop)
