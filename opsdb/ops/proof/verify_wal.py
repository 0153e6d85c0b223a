"""Which WAL `opsdb verify` reads and whether it is continuous: all of a cluster's WAL, or for one
backup the WAL from its start to the newest contiguous segment; every backup must reach the newest
archived segment of its timelines (a missing segment cuts every restore through it short)."""

from __future__ import annotations

from typing import Any

from opsdb.model.lsn import segment_name
from opsdb.model.target import as_lsn
from opsdb.model.window import timeline_of_segment, walk
from opsdb.ops.proof.verify_result import Problem, VerifyResult, field_of
from opsdb.repo import layout
from opsdb.repo import wal as walrepo
from opsdb.storage.base import Storage


def wal_sizes(cluster: str, scan: walrepo.ArchiveScan, segment_size: int) -> dict[str, int]:
    return {
        layout.wal_object(cluster, segment_name(tli, segno, segment_size)): size
        for (tli, segno), size in scan.sizes.items()
    }


def all_wal(storage: Storage, cluster: str) -> list[str]:
    return [info.key for info in storage.list(layout.wal_prefix(cluster))]


def _history(scan: walrepo.ArchiveScan, timeline: int) -> list[Any]:
    return scan.history(timeline)


def check_continuity(scan: walrepo.ArchiveScan, records: list[Any], result: VerifyResult, segment_size: int) -> None:
    """Every backup must reach the newest archived segment of the newest timeline on its path."""
    for record in records:
        start = as_lsn(field_of(record, "start_lsn"))
        if start is None or field_of(record, "kind", "physical") != "physical":
            continue
        tli = int(field_of(record, "timeline", 1) or 1)
        # the timelines descending from this backup's timeline (itself included)
        targets = [t for t in scan.timelines if t == tli or any(h.parent_timeline == tli for h in scan.history(t))]
        for target in targets or [tli]:
            newest = max((r.last for r in scan.ranges.get(target, [])), default=None)
            if newest is None:
                continue
            w = walk(start.segment_number(segment_size), target, _history(scan, target), scan.segments, segment_size)
            if w.last_segno < newest:
                newest_name = segment_name(target, newest, segment_size)
                result.problems.append(
                    Problem(
                        layout.wal_object(result.cluster, w.first_missing or "?"),
                        f"missing WAL segment: backup {record.id} cannot replay past it to the newest archived "
                        f"segment {newest_name} (timeline {target})",
                    )
                )


def wal_needed(scan: walrepo.ArchiveScan, records: list[Any], result: VerifyResult, segment_size: int) -> list[str]:
    """For one backup: the WAL from its start to the newest contiguous segment (and history files)."""
    keys: list[str] = []
    for record in records:
        start = as_lsn(field_of(record, "start_lsn"))
        stop = as_lsn(field_of(record, "stop_lsn"))
        if start is None:
            continue
        target = scan.latest_timeline()
        history = scan.history(target)
        w = walk(start.segment_number(segment_size), target, history, scan.segments, segment_size)
        if stop is not None and w.last_segno < stop.segment_number(segment_size):
            result.problems.append(
                Problem(
                    layout.wal_object(result.cluster, w.first_missing or "?"),
                    f"missing WAL segment: backup {record.id} cannot reach consistency (needs WAL up to {stop})",
                )
            )
        for segno in range(w.first_segno, w.last_segno + 1):
            tli = timeline_of_segment(segno, target, history, segment_size)
            keys.append(layout.wal_object(result.cluster, segment_name(tli, segno, segment_size)))
        keys += [layout.wal_object(result.cluster, f"{t:08X}.history") for t in scan.histories]
    return keys
