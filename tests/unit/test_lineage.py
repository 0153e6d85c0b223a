"""model/lineage.py: which timeline is the primary's line, and how the others relate to it; and
ops/recovery/timelines.py's refusal that names the timelines that do reach a target."""

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from opsdb.errors import UsageError
from opsdb.model.lineage import PrimaryLine, branch_note, primary_line, promoted_line
from opsdb.model.lsn import HistoryEntry, Lsn
from opsdb.model.target import RecoveryTarget
from opsdb.ops.recovery.pitr_checks import GapRefused
from opsdb.ops.recovery.timelines import plan_or_alternatives

SEG = 16 * 1024 * 1024


@dataclass
class B:
    id: str
    timeline: int
    stop_lsn: str = "0/2000100"
    start_lsn: str = "0/2000028"
    stop_time: datetime = datetime(2026, 11, 21, 9, tzinfo=UTC)
    kind: str = "physical"
    status: str = "complete"


def _branch(parent: int, lsn: str, *older: HistoryEntry) -> list[HistoryEntry]:
    return [*older, HistoryEntry(parent, Lsn.parse(lsn), "")]


def test_the_live_primary_wins_then_the_newest_backup_then_the_highest_timeline() -> None:
    backups = [B("b1", 1), B("b2", 2)]
    assert primary_line(backups, [1, 2, 3], live=3) == PrimaryLine(3, "live primary")
    assert primary_line(backups, [1, 2, 3]) == PrimaryLine(2, "newest backup")
    assert primary_line([], [1, 2, 3]) == PrimaryLine(3, "archive")
    assert primary_line([], []) == PrimaryLine(1, "archive")


def test_a_promotion_where_the_parent_stops_archiving_continues_the_line() -> None:
    # a failover: timeline 1's archive ends in the segment where timeline 2 begins
    histories = {2: _branch(1, "0/5000100")}
    line = promoted_line(PrimaryLine(1, "newest backup"), histories, {1: 5, 2: 9}, SEG)
    assert line == PrimaryLine(2, "newest backup", promoted_from=1)
    assert line.describe(2) == "timeline 2, promoted where the newest backup's timeline 1 ends"
    # and again: 3 branched from 2 where 2 ends
    histories[3] = _branch(2, "0/9000028", *histories[2])
    assert promoted_line(PrimaryLine(1, "newest backup"), histories, {1: 5, 2: 9, 3: 12}, SEG).timeline == 3


def test_a_branch_whose_parent_went_on_archiving_is_a_copys_and_not_followed() -> None:
    # a copy restored next to the primary at 0/5000100: the primary archived up to segment 8 since
    histories = {2: _branch(1, "0/5000100")}
    line = promoted_line(PrimaryLine(1, "newest backup"), histories, {1: 8, 2: 6}, SEG)
    assert line == PrimaryLine(1, "newest backup")
    assert line.describe(2) == "timeline 1, the newest backup's (the archive also has timeline 2: --timeline latest)"
    # asked of the live primary, its answer stands even where the archive looks like a failover
    live = PrimaryLine(1, "live primary")
    assert promoted_line(live, histories, {1: 5, 2: 9}, SEG) is live


def test_branch_notes_say_why_a_timeline_is_off_the_line() -> None:
    histories = {1: [], 2: _branch(1, "0/5000100"), 3: _branch(1, "0/6000000")}
    assert branch_note(1, 3, histories.__getitem__, has_backups=True) is None  # an ancestor of the line
    assert branch_note(3, 3, histories.__getitem__, has_backups=False) is None
    assert branch_note(2, 1, histories.__getitem__, has_backups=False) == (
        "descends from the primary's timeline 1, but the primary is not on it"
    )
    sibling = branch_note(2, 3, histories.__getitem__, has_backups=False)
    assert sibling is not None and sibling.startswith("a branch the primary is not on (no backup was taken")


def test_a_refusal_names_every_other_timeline_that_reaches_the_target_and_keeps_its_kind() -> None:
    def plan(target: RecoveryTarget) -> str:
        if target.timeline in (1, 3):
            return f"plan on {target.timeline}"
        raise GapRefused(f"refused on {target.timeline}", hint="choose a target before the gap")

    asked = RecoveryTarget("time", time=datetime(2026, 11, 21, 10, tzinfo=UTC), timeline=2)
    assert plan_or_alternatives(plan, RecoveryTarget(timeline=1), [1, 2, 3]) == "plan on 1"
    with pytest.raises(GapRefused) as refused:
        plan_or_alternatives(plan, asked, [1, 2, 3, 4])
    assert refused.value.message == (
        "refused on 2; the target is reachable on timeline 1 (--timeline 1), timeline 3 (--timeline 3)"
    )
    assert refused.value.hint == "choose a target before the gap"
    with pytest.raises(UsageError, match=r"^refused on 2$"):  # nowhere else: the refusal as it was
        plan_or_alternatives(plan, asked, [2, 4])
