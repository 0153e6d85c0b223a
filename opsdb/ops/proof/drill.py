"""opsdb drill: restore into a scratch instance, prove it, time it, report it.

Phases (their sum is the measured RTO): plan (catalog, WAL archive, target, backup), fetch_extract
(read and unpack the backup), wal_replay (start the server until it reaches the target and is
promoted), checks (pg_verifybackup, recovery point, pg_amcheck, row counts, assertions).
Whatever happens, the scratch instance is torn down (unless keep) and a report is returned: a
drill that cannot restore is a failed drill with its reason, not a crash. The scratch server's
recovery settings, start and promotion: drill_server.py.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from opsdb import __version__
from opsdb.errors import OpsdbError, UsageError
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, Lsn, parse_wal_name
from opsdb.model.report import (
    FAIL,
    PASS,
    PHASE_CHECKS,
    PHASE_FETCH,
    PHASE_PLAN,
    PHASE_REPLAY,
    Check,
    DrillReport,
    RecoveryPoint,
    TimelinePicture,
    WalRange,
    new_report_id,
)
from opsdb.model.target import as_lsn
from opsdb.ops.common.estimate import announce_total
from opsdb.ops.common.phases import phase
from opsdb.ops.proof import drill_checks
from opsdb.ops.proof.drill_plan import DrillPlan, make_plan
from opsdb.ops.proof.drill_server import point_reached, replay_and_promote, write_recovery_settings
from opsdb.ops.proof.scratch import ScratchProvider, ScratchSpace
from opsdb.ops.recovery.pitr_reach import end_reader, recovery_end
from opsdb.ops.recovery.replay_progress import OnReplay, ReplaySpan, reporter, segment_end
from opsdb.pg import heartbeat as hb
from opsdb.pg.conn import connect as pg_connect
from opsdb.pg.tools import PgTools
from opsdb.proc import Runner
from opsdb.storage.base import Storage


class Restorer(Protocol):
    """What a drill needs from the backup side: the catalog, and fetch + extract of one backup."""

    def backups(self) -> list[Any]: ...

    def fetch_extract(self, backup: Any, data_dir: Path, on_bytes: Callable[[int], None]) -> int:
        """Extract `backup` into the empty data_dir (owned by os_user, 0700); return bytes read."""
        ...

    def stage_wal(self, names: Sequence[str], dest: Path) -> int:
        """Fetch archived WAL files into dest (docker provider); return bytes read."""
        ...


@dataclasses.dataclass(frozen=True)
class DrillRequest:
    cluster: str
    target_kind: str = "latest"  # latest | time | random
    to_time: datetime | None = None
    keep: bool = False
    heartbeat_schema: str = "public"
    assertions: tuple[drill_checks.Assertion, ...] = ()
    largest_tables: int = 5
    primary_conninfo: str | None = None
    restore_command: str = ""  # e.g. "opsdb --config /etc/opsdb/opsdb.toml wal-fetch %f %p"
    timeout: float = 6 * 3600
    os_user: str | None = None
    segment_size: int = DEFAULT_SEGMENT_SIZE
    live_timeline: int | None = None  # the primary's timeline now, when it answered (ops/recovery/timelines.py)


@dataclasses.dataclass
class _Run:
    """Mutable state of one drill while it runs."""

    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    checks: list[Check] = dataclasses.field(default_factory=list)
    bytes_read: int = 0
    plan: DrillPlan | None = None
    point: RecoveryPoint = RecoveryPoint()
    recovered: datetime | None = None
    error: str | None = None
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)

    @contextmanager
    def phase(self, name: str, clock: Callable[[], float]) -> Iterator[None]:
        start = clock()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + clock() - start


def run_drill(
    request: DrillRequest,
    *,
    storage: Storage,
    keys: Mapping[str, Any],
    restorer: Restorer,
    scratch: ScratchProvider,
    bin_dir: Path,
    runner: Runner,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    connect: Callable[..., Any] = pg_connect,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_replay: OnReplay | None = None,
) -> DrillReport:
    """Plan, restore into a scratch instance, replay, prove; each stage logs a phase line (ops/common/phases.py).
    on_bytes: backup bytes extracted (told the backup's size first); on_replay: (WAL replayed, to replay)."""
    started = now()
    run = _Run(environment={"opsdb_version": __version__, "provider": scratch.name, "host": socket.gethostname()})
    space: ScratchSpace | None = None
    try:
        with run.phase(PHASE_PLAN, clock):
            run.plan = make_plan(
                storage,
                request.cluster,
                keys,
                restorer.backups(),
                request.target_kind,
                request.to_time,
                drill_started=started,
                rng=rng or random.Random(),
                segment_size=request.segment_size,
                read_end=end_reader(storage, request.cluster, keys, bin_dir, runner),
                live_timeline=request.live_timeline,
            )
            run.checks.append(run.plan.coverage)
            run.plan = _planned_end_from_records(
                run.plan, storage, request.cluster, keys, bin_dir, runner, request.segment_size
            )
            phase(
                "drill",
                "plan",
                target=run.plan.target.describe(),
                backup_id=run.plan.backup.id,
                wal_segments=len(run.plan.wal_names),
                planned_end=run.plan.planned_end,
            )
        space = scratch.prepare()
        run.environment.update({"scratch_dir": str(space.workdir)})
        phase("drill", "scratch", provider=scratch.name, scratch_dir=str(space.workdir), port=space.port)
        _restore_and_prove(
            request, run, space, storage, restorer, scratch, bin_dir, runner, clock, connect, on_bytes, on_replay
        )
    except UsageError:
        raise  # bad input (a target outside the window): exit 2, nothing to report
    except OpsdbError as exc:
        run.error = exc.message
        run.checks.append(Check("drill completed", FAIL, exc.message))
    finally:
        if space is not None:
            try:
                scratch.teardown(space, keep=request.keep)
            except OpsdbError as exc:
                run.checks.append(Check("scratch teardown", FAIL, exc.message))
            run.environment["kept"] = request.keep
            phase("drill", "teardown", kept=request.keep)
    return _report(request, run, started, now())


def _restore_and_prove(
    request: DrillRequest,
    run: _Run,
    space: ScratchSpace,
    storage: Storage,
    restorer: Restorer,
    scratch: ScratchProvider,
    bin_dir: Path,
    runner: Runner,
    clock: Callable[[], float],
    connect: Callable[..., Any],
    on_bytes: Callable[[int], None],
    on_replay: OnReplay | None,
) -> None:
    plan = run.plan
    assert plan is not None
    tools = PgTools(bin_dir)
    run_as = request.os_user if scratch.name == "local" else None
    size = getattr(plan.backup, "size_bytes", None)
    announce_total(on_bytes, size)  # the progress bar's 100 %
    phase("drill", "fetch", backup_id=plan.backup.id, bytes=size)
    with run.phase(PHASE_FETCH, clock):
        run.bytes_read += restorer.fetch_extract(plan.backup, space.data_dir, on_bytes)
        staged = scratch.needs_staged_wal or not request.restore_command
        if staged:
            run.bytes_read += restorer.stage_wal(plan.wal_names, space.wal_dir)
        run.environment["wal_source"] = "staged from the repository" if staged else "opsdb wal-fetch"
    phase("drill", "pg_verifybackup", wal_source=run.environment["wal_source"])
    with run.phase(PHASE_CHECKS, clock):  # before anything in the data directory is changed
        verified = drill_checks.pg_verifybackup(tools, runner, space.data_dir, run_as)
        if verified is not None:
            run.checks.append(verified)
    with run.phase(PHASE_FETCH, clock):
        write_recovery_settings(
            plan.target,
            space,
            scratch,
            staged=staged,
            restore_command=request.restore_command,
            os_user=request.os_user,
        )
    span = replay_span(plan, request.segment_size)
    phase("drill", "replay", from_lsn=span and span.start, to_lsn=span and span.end, replay_bytes=span and span.total)
    with run.phase(PHASE_REPLAY, clock):
        promoted = replay_and_promote(space, scratch, connect, clock, request.timeout, reporter(span, on_replay))
    run.checks.append(promoted)
    if not promoted.passed:
        return
    with run.phase(PHASE_CHECKS, clock):
        with connect(scratch.conninfo(space), timeout=10) as conn:
            run.point = point_reached(conn)
            log_text = scratch.log_tail(space, 256 * 1024)
            run.checks.append(drill_checks.replay_reached(plan.planned_end, run.point.lsn, plan.target_kind, log_text))
            run.environment["postgresql"] = conn.fetchval("SHOW server_version")
            sql = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"
            databases = [r["datname"] for r in conn.fetchall(sql)]
            check, beat = _recovery_point(request, plan, conn, connect)
            run.checks.append(check)
        run.recovered = beat.time if beat else run.point.replay_time
        run.point = dataclasses.replace(run.point, heartbeat_time=beat.time if beat else None)
        phase("drill", "checks", reached_lsn=run.point.lsn, databases=len(databases))
        run.checks.append(drill_checks.pg_amcheck(tools, runner, scratch.conninfo(space), run_as))

        def db_connect(db: str) -> Any:
            return connect(scratch.conninfo(space, db), timeout=10)

        run.checks.append(drill_checks.largest_tables(db_connect, databases, request.largest_tables))
        run.checks.extend(drill_checks.assertions(db_connect, request.assertions))


def _planned_end_from_records(
    plan: DrillPlan,
    storage: Storage,
    cluster: str,
    keys: Mapping[str, Any],
    bin_dir: Path,
    runner: Runner,
    segment_size: int,
) -> DrillPlan:
    """For the latest target with contiguous WAL: the start of the last record in it (pg_waldump), so a
    replay that stops anywhere before the very end fails the drill."""
    if plan.planned_end is None or not plan.wal_names or plan.wal_last is None:
        return plan
    if plan.planned_end.segment_number(segment_size) > parse_wal_name(plan.wal_last, segment_size).segno:  # type: ignore[operator]  # wal_last names a segment
        return plan  # WAL beyond a gap: the lower bound already cannot be reached
    if not (Path(bin_dir) / "pg_waldump").is_file():
        return plan
    try:
        end = recovery_end(storage, cluster, keys, plan.wal_names, bin_dir=bin_dir, runner=runner)
    except OpsdbError:
        return plan  # the replay itself will show what cannot be read
    if end is None or end.lsn is None or end.lsn < plan.planned_end:
        return plan
    return dataclasses.replace(plan, planned_end=end.lsn)


def replay_span(plan: DrillPlan, segment_size: int) -> ReplaySpan | None:
    """From the backup's start to the planned end (the end of the last needed segment when the plan has
    no exact end: a time target stops somewhere before it, so the bar ends early)."""
    start = as_lsn(getattr(plan.backup, "start_lsn", None))
    end = plan.planned_end or segment_end(plan.wal_last, segment_size)
    return ReplaySpan(start, end) if start is not None else None


def _recovery_point(
    request: DrillRequest, plan: DrillPlan, restored: Any, connect: Callable[..., Any]
) -> tuple[Check, Any]:
    primary = None
    if request.primary_conninfo:
        try:
            primary = connect(request.primary_conninfo, timeout=5)
        except OpsdbError:
            primary = None
    try:
        if primary is not None and not hb.table_exists(primary, request.heartbeat_schema):
            primary.close()
            primary = None
        return drill_checks.recovery_point(
            restored,
            request.heartbeat_schema,
            target_kind=plan.target_kind,
            target_time=plan.target_time,
            primary=primary,
            archive_end_lsn=str(plan.archive_end_lsn) if plan.archive_end_lsn else None,
        )
    finally:
        if primary is not None:
            primary.close()


def _report(request: DrillRequest, run: _Run, started: datetime, finished: datetime) -> DrillReport:
    plan = run.plan
    phases = {
        name: round(run.phases.get(name, 0.0), 3) for name in (PHASE_PLAN, PHASE_FETCH, PHASE_REPLAY, PHASE_CHECKS)
    }
    passed = bool(run.checks) and all(c.passed for c in run.checks) and run.error is None
    target_time = plan.target_time if plan else (request.to_time or started)
    rpo = (target_time - run.recovered).total_seconds() if (run.recovered and target_time) else None
    wal = None
    if plan is not None:
        last = plan.wal_last
        if run.point.lsn:
            reached_seg = Lsn.parse(run.point.lsn).segment_number(request.segment_size)
            names = [
                n
                for n in plan.wal_names
                if int(n[8:16], 16) * (0x100000000 // request.segment_size) + int(n[16:], 16) <= reached_seg
            ]
            last = names[-1] if names else last
            wal = WalRange(plan.timeline, plan.wal_names[0] if plan.wal_names else None, last, len(names))
        else:
            wal = WalRange(plan.timeline, plan.wal_names[0] if plan.wal_names else None, last, len(plan.wal_names))
    return DrillReport(
        id=new_report_id(started),
        cluster=request.cluster,
        result=PASS if passed else FAIL,
        started_at=started,
        finished_at=finished,
        target_kind=request.target_kind,
        target_time=target_time,
        recovered_time=run.recovered,
        rpo_seconds=rpo,
        rto_seconds=round(sum(phases.values()), 3),
        phases=phases,
        checks=run.checks,
        bytes_read=run.bytes_read,
        backup=plan.backup_ref if plan else None,
        wal=wal,
        recovery_point=run.point,
        picture=plan.picture if plan else TimelinePicture(),
        environment=run.environment,
        error=run.error,
    )


__all__ = ["DrillRequest", "Restorer", "run_drill"]
