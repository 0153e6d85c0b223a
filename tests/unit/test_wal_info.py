"""ops/repository/info.py + render/info.py over a MemoryStorage archive with two timelines and a gap."""

import dataclasses
from datetime import UTC, datetime

from opsdb.ops.repository.info import cluster_info
from opsdb.ops.wal import push_fetch as ops_wal
from opsdb.render.info import info_json, info_text
from opsdb.repo.envelope import Codec
from opsdb.storage.memory import MemoryStorage
from tests.fakes import wal_segment


@dataclasses.dataclass
class B:
    id: str
    start_lsn: str
    stop_lsn: str
    stop_time: datetime
    timeline: int = 1
    kind: str = "physical"
    status: str = "complete"


def test_info_timelines_gaps_and_window(tmp_path):
    repo = ops_wal.WalRepo(MemoryStorage(), "main", Codec("none", 0), {})

    def push(name, content=b"x"):
        (tmp_path / name).write_bytes(content if name.endswith(".history") else wal_segment(name, content))
        ops_wal.push_file(repo, str(tmp_path / name))

    for n in (2, 3, 4, 5, 8):
        push(f"0000000100000000000000{n:02X}")
    push("00000002.history", b"1\t0/5000100\tbefore 2026-11-21 10:00:00+00\n")
    for n in (5, 6):
        push(f"0000000200000000000000{n:02X}")
    backups = [B("b1", "0/2000028", "0/2000100", datetime(2026, 11, 21, 9, tzinfo=UTC))]
    # the primary unreachable: its line is the newest backup's timeline, 1; timeline 2 is a branch
    alone = info_json(cluster_info(repo, backups))
    assert alone["timeline"] == 1 and alone["newest_timeline"] == 2 and alone["live_timeline"] is None
    assert alone["recoverable_to_lsn"] == "0/6000000"
    assert [(t["primary_line"], t["note"]) for t in alone["timelines"]] == [
        (True, None),
        (False, "descends from the primary's timeline 1, but the primary is not on it"),
    ]
    # the live primary is on timeline 2 (it failed over): that is its line, and 1 is on it too
    info = cluster_info(repo, backups, live=2)
    doc = info_json(info)
    assert {"cluster", "recoverable_from", "recoverable_to", "timeline", "backups", "wal_gaps"} <= set(doc)
    assert doc["cluster"] == "main" and doc["timeline"] == 2 and doc["backups"] == 1
    assert [(t["primary_line"], t["live"]) for t in doc["timelines"]] == [(True, False), (True, True)]
    assert "the live primary's" in doc["timeline_choice"]
    assert doc["recoverable_from"] == "2026-11-21T09:00:00Z"
    assert doc["recoverable_to_lsn"] == "0/7000000"  # TLI 1 up to 4, then TLI 2 from the switch segment 5
    assert doc["wal_gaps"] == [
        {"timeline": 1, "from": "000000010000000000000006", "to": "000000010000000000000007", "segments": 2}
    ]
    tl1 = doc["timelines"][0]
    assert tl1["recoverable_to_lsn"] == "0/6000000" and tl1["wal_segments"] == 5
    assert doc["timelines"][1]["parent"] == 1 and doc["timelines"][1]["switch_lsn"] == "0/5000100"
    text = info_text(info)
    assert "GAP: 000000010000000000000006 .. 000000010000000000000007" in text


def test_info_empty_repository():
    repo = ops_wal.WalRepo(MemoryStorage(), "main", Codec("none", 0), {})
    doc = info_json(cluster_info(repo, []))
    assert doc["recoverable_from"] is None and doc["backups"] == 0 and doc["wal_gaps"] == []
