"""Where recovery can really stop: the last commit/abort time and the last record in the archived WAL.

The archive says which segments exist and when they were uploaded; an upload time is only an upper
bound of the commits inside (an idle primary's last segment may hold no commit at all). PostgreSQL
stops for a time target only at a commit or abort record, so the recoverable window ends at the
newest such record. It is read at plan time: the newest segment(s) of the contiguous WAL are
fetched to a private temporary directory and read by pg_waldump, newest first, until a commit or
abort is found (at most MAX_SEGMENTS); of each segment the last TAIL_BYTES first. wal-push stays as fast as before: nothing is recorded when
archiving (docs/pitr.md has the measurements behind this choice).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, Lsn, parse_wal_name
from opsdb.model.window import RecoveryEnd
from opsdb.pg.tools import PgTools
from opsdb.pg.waldump import SegmentRecords, dump_segment
from opsdb.proc import Runner
from opsdb.repo import wal as repo_wal
from opsdb.storage.base import Storage

if TYPE_CHECKING:
    from opsdb.config import Settings

MAX_SEGMENTS = 16  # newest segments read looking for a commit (16 x 16 MB at most)
TAIL_BYTES = 512 * 1024  # read first: the end of the segment

ReadEnd = Callable[[Sequence[str]], RecoveryEnd | None]


def recovery_end(
    storage: Storage,
    cluster: str,
    keys: Mapping[str, Any],
    names: Sequence[str],
    *,
    bin_dir: Path,
    runner: Runner,
    max_segments: int = MAX_SEGMENTS,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> RecoveryEnd | None:
    """names: the contiguous archived segments recovery will read, oldest first."""
    if not names:
        return None
    tools = PgTools(bin_dir)
    last_lsn = None
    with tempfile.TemporaryDirectory(prefix="opsdb-walend-") as tmp:
        wal_dir = Path(tmp)
        for name in list(reversed(names))[:max_segments]:
            path = wal_dir / name
            with open(path, "wb") as fh:
                for chunk in repo_wal.fetch(storage, cluster, name, keys):
                    fh.write(chunk)
            found = _newest_records(tools, runner, wal_dir, name, segment_size)
            os.unlink(path)
            last_lsn = last_lsn or found.last_lsn
            if found.last_stop_time is not None:
                return RecoveryEnd(last_lsn, found.last_stop_time, found.last_stop_record)
    return RecoveryEnd(last_lsn, None, None)


def _newest_records(tools: PgTools, runner: Runner, wal_dir: Path, name: str, segment_size: int) -> SegmentRecords:
    """The segment's tail first (pg_waldump's time is in printing every record: a segment of small
    commits takes seconds whole), the whole segment only when the tail holds no commit or record."""
    first = parse_wal_name(name, segment_size).segno
    assert first is not None
    tail = dump_segment(tools, runner, wal_dir, name, Lsn((first + 1) * segment_size - TAIL_BYTES))
    if tail.last_stop_time is not None and tail.last_lsn is not None:
        return tail
    whole = dump_segment(tools, runner, wal_dir, name)
    return SegmentRecords(tail.last_lsn or whole.last_lsn, whole.last_stop_time, whole.last_stop_record)


def end_reader(
    storage: Storage, cluster: str, keys: Mapping[str, Any], bin_dir: Path | None, runner: Runner
) -> ReadEnd | None:
    """A ReadEnd for plan_recovery, or None without pg_waldump (the window then ends at the archive's
    upload times, and plans say so)."""
    if bin_dir is None or not (Path(bin_dir) / "pg_waldump").is_file():
        return None

    def read(names: Sequence[str]) -> RecoveryEnd | None:
        return recovery_end(storage, cluster, keys, names, bin_dir=Path(bin_dir), runner=runner)

    return read


def end_reader_from_settings(
    settings: Settings, cluster: str, storage: Storage, keys: Mapping[str, Any]
) -> ReadEnd | None:
    """end_reader with the cluster's PostgreSQL binaries (None when there are none on this machine)."""
    from opsdb.errors import UsageError
    from opsdb.pg.tools import find_bin_dir
    from opsdb.proc import LocalRunner

    try:
        bin_dir = find_bin_dir(settings.clusters[cluster].pg_bin_dir)
    except UsageError:
        return None
    return end_reader(storage, cluster, keys, bin_dir, LocalRunner())
