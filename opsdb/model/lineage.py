"""Which of the archive's timelines is the primary's line, and how the others relate to it.

A shared archive can hold timelines the primary was never on: a copy restored next to it that was
promoted while it still archived (before `restore --archive-mode`), a drill from an old version, a
failed-over primary's abandoned branch. PostgreSQL's `recovery_target_timeline = 'latest'` follows
the highest one, which is right for a standby and wrong for "restore my primary": that copy's branch
ends where it stopped archiving, minutes after the branch, while the primary carries on.

So restore and drill follow the primary's line unless told otherwise (`--timeline latest|N`):
the live primary's timeline when it can be asked, else the timeline of the newest complete backup
(backups are taken of the primary), carried on through promotions that begin where that timeline's
archived WAL ends (a failover, or a restore that replaced the primary, before any backup on the new
timeline): a branch whose parent went on archiving after the branch point is a copy's, and is not
followed. `info` marks each timeline with what it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, HistoryEntry, Lsn
from opsdb.model.target import as_lsn, physical_complete


def backup_timeline(backup: Any) -> int:
    return int(getattr(backup, "timeline", 1) or 1)


def backup_start(backup: Any) -> Lsn:
    """Where a backup's WAL starts (its stop LSN when no start was recorded)."""
    lsn = as_lsn(getattr(backup, "start_lsn", None)) or as_lsn(backup.stop_lsn)
    assert lsn is not None
    return lsn


@dataclasses.dataclass(frozen=True)
class PrimaryLine:
    """The timeline restore and drill follow by default, and where that came from."""

    timeline: int
    source: str  # "live primary" | "newest backup" | "archive" (no backup: the highest timeline)
    promoted_from: int | None = None  # the source's timeline, when promotions were followed from it

    def describe(self, highest: int) -> str:
        """E.g. "timeline 1, the newest backup's (the archive also has timeline 2: --timeline latest)"."""
        why = "the highest in the archive: no backup yet" if self.source == "archive" else f"the {self.source}'s"
        if self.promoted_from is not None:
            why = f"promoted where {why} timeline {self.promoted_from} ends"
        other = f" (the archive also has timeline {highest}: --timeline latest)" if highest > self.timeline else ""
        return f"timeline {self.timeline}, {why}{other}"


def primary_line(backups: Sequence[Any], timelines: Iterable[int], live: int | None = None) -> PrimaryLine:
    """The live primary's timeline when known, else the newest complete backup's, else the highest."""
    if live is not None:
        return PrimaryLine(live, "live primary")
    complete = physical_complete(backups)
    if complete:
        return PrimaryLine(backup_timeline(complete[-1]), "newest backup")
    return PrimaryLine(max([1, *timelines]), "archive")


def promoted_line(
    line: PrimaryLine,
    histories: Mapping[int, Sequence[HistoryEntry]],
    last_segno: Mapping[int, int],
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> PrimaryLine:
    """Follow promotions from a line that was not asked of the live primary: a child timeline whose
    parent archived nothing after the segment where the child begins continues the line (the parent's
    server stopped there: a failover); one whose parent went on archiving is a copy's branch.
    last_segno: per timeline, the newest archived segment number."""
    if line.source == "live primary":
        return line
    timeline = line.timeline
    for _ in range(len(histories) + 1):  # bounded: each step moves to a higher timeline
        ends = last_segno.get(timeline, -1)
        children = [
            child
            for child, history in histories.items()
            if history
            and child > timeline
            and history[-1].parent_timeline == timeline
            and ends <= history[-1].switch_lsn.segment_number(segment_size)
        ]
        if not children:
            break
        timeline = max(children)
    if timeline == line.timeline:
        return line
    return dataclasses.replace(line, timeline=timeline, promoted_from=line.timeline)


def ancestors(timeline: int, history: Sequence[Any]) -> set[int]:
    """The timelines `timeline` descends from (its .history entries' parents), itself included."""
    return {timeline, *(int(h.parent_timeline) for h in history)}


def branch_note(timeline: int, line: int, history_of: Any, has_backups: bool) -> str | None:
    """Why a timeline is not the primary's line, for `info`: None for the line and its ancestors."""
    if timeline in ancestors(line, history_of(line)):
        return None
    if line in ancestors(timeline, history_of(timeline)):
        return f"descends from the primary's timeline {line}, but the primary is not on it"
    what = "a branch the primary is not on"
    return what + ("" if has_backups else " (no backup was taken on it: a restored copy or a drill archived it?)")
