"""pg_waldump over one WAL segment: the records recovery could stop at (commit, abort, restore point).

PostgreSQL's own decoder reads the records, so opsdb never parses the WAL record format itself. The
segment is dumped alone: pg_waldump lists the records that start in it and then stops with an error
at the first record it cannot finish (the next segment is not there), which is expected here.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

from opsdb.model.lsn import Lsn
from opsdb.pg.tools import PgTools
from opsdb.proc import Cmd, Runner

# rmgr: Transaction len (rec/tot):     34/    34, tx:        745, lsn: 0/01A4F1D8, prev 0/01A4F1A0, desc: COMMIT 2026-12-05 02:50:00.123456 UTC
_RECORD = re.compile(
    r"^rmgr:\s*(?P<rmgr>\w+)\s+len \(rec/tot\):.*?tx:\s*(?P<xid>\d+), lsn:\s*(?P<lsn>[0-9A-Fa-f]+/[0-9A-Fa-f]+),"
    r".*?desc:\s*(?P<desc>.*)$"
)
_STOP_TIME = re.compile(r"^(COMMIT|ABORT)(?:_PREPARED)?\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


@dataclasses.dataclass(frozen=True)
class SegmentRecords:
    """What one segment holds for recovery targets."""

    last_lsn: Lsn | None  # start of the last complete record that starts in the segment
    last_stop_time: datetime | None  # time of the last commit or abort record
    last_stop_record: str | None  # that record, e.g. "COMMIT 2026-12-05 02:50:00.123456 UTC (tx 745, LSN 0/3000120)"


def parse_records(text: str) -> SegmentRecords:
    last_lsn = None
    stop_time = None
    stop_record = None
    for line in text.splitlines():
        match = _RECORD.match(line.strip())
        if not match:
            continue
        lsn = Lsn.parse(match.group("lsn"))
        last_lsn = lsn
        if match.group("rmgr") != "Transaction":
            continue
        desc = match.group("desc").strip()
        if timed := _STOP_TIME.match(desc):
            stop_time = datetime.fromisoformat(timed.group(2)).replace(tzinfo=UTC)
            stop_record = f"{desc.split(';', 1)[0]} (tx {match.group('xid')}, LSN {lsn})"
    return SegmentRecords(last_lsn, stop_time, stop_record)


def dump_segment(tools: PgTools, runner: Runner, wal_dir: Path, name: str, start: Lsn | None = None) -> SegmentRecords:
    """pg_waldump on one segment in wal_dir (times in UTC), from `start` (any position inside it: pg_waldump
    finds the next record) or its beginning. The non-zero exit at the segment's end is expected (the
    next segment is not there); only the records printed are used."""
    since = ("--start", str(start)) if start is not None else ()
    cmd = Cmd(
        (tools.path("pg_waldump"), "--path", str(wal_dir), *since, name),
        env={"TZ": "UTC", "LC_ALL": "C"},
        timeout=300,
    )
    done = runner.run(cmd, check=False, doing=f"reading the records of WAL segment {name}")
    return parse_records(done.stdout.decode("utf-8", "replace"))
