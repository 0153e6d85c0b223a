import pytest

from opsdb.errors import UsageError
from opsdb.model.lsn import (
    Lsn,
    contiguous_ranges,
    gaps,
    parse_history,
    parse_wal_name,
    segment_name,
    segment_of,
)


def test_lsn_parse_format_and_order():
    a = Lsn.parse("16/B374D848")
    assert str(a) == "16/B374D848"
    assert a.value == (0x16 << 32) | 0xB374D848
    assert Lsn.parse("0/0") < Lsn.parse("0/1") < Lsn.parse("1/0")
    assert Lsn.parse("1/0") - Lsn.parse("0/FFFFFFFF") == 1


@pytest.mark.parametrize("bad", ["", "16", "16/", "G/1", "1/2/3", "123456789/0"])
def test_lsn_rejects_garbage(bad):
    with pytest.raises(UsageError):
        Lsn.parse(bad)


def test_segment_names_roll_over_log_boundary():
    assert segment_name(1, 0) == "000000010000000000000000"
    assert segment_name(1, 255) == "0000000100000000000000FF"
    assert segment_name(1, 256) == "000000010000000100000000"
    assert segment_of(2, Lsn.parse("1/FF000028")) == "0000000200000001000000FF"


def test_parse_wal_names():
    seg = parse_wal_name("0000000200000001000000FF")
    assert (seg.kind, seg.timeline, seg.segno) == ("segment", 2, 511)
    assert parse_wal_name("000000010000000000000003.partial").kind == "partial"
    backup = parse_wal_name("000000010000000000000002.00000028.backup")
    assert (backup.kind, backup.segno) == ("backup", 2)
    hist = parse_wal_name("00000003.history")
    assert (hist.kind, hist.timeline, hist.segno) == ("history", 3, None)
    with pytest.raises(UsageError):
        parse_wal_name("../etc/passwd")


def test_history_file():
    text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A28\tbefore 2026-11-21 10:00:00+00\n"
    entries = parse_history(text)
    assert [e.parent_timeline for e in entries] == [1, 2]
    assert str(entries[1].switch_lsn) == "0/5000A28"


def test_ranges_and_gaps():
    names = [segment_name(1, n) for n in (1, 2, 3, 5, 6, 9)] + [segment_name(2, 6), "00000002.history"]
    ranges = contiguous_ranges(parse_wal_name(n) for n in names)
    assert [(r.first, r.last) for r in ranges[1]] == [(1, 3), (5, 6), (9, 9)]
    assert gaps(ranges[1]) == [(4, 4), (7, 8)]
    assert [(r.first, r.last) for r in ranges[2]] == [(6, 6)]
    assert gaps(ranges[2]) == []
