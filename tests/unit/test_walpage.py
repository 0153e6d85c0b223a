"""pg/walpage.py and pg/control.py: a WAL file's own headers checked against the name it is stored
under, and the data directory's system identifier."""

from opsdb.errors import IntegrityError
from opsdb.pg import control, walpage
from tests.fakes import TEST_SYSTEM_IDENTIFIER, wal_segment

SEG5 = "000000010000000A00000005"


def test_a_segment_matches_its_own_name() -> None:
    head = wal_segment(SEG5)[:40]
    header = walpage.parse_segment_header(head)
    assert header is not None and header.timeline == 1 and header.system_identifier == TEST_SYSTEM_IDENTIFIER
    assert header.page_address == (0xA * 256 + 5) * 16 * 1024 * 1024
    assert walpage.segment_mismatch(SEG5, head, {TEST_SYSTEM_IDENTIFIER}) is None
    assert walpage.segment_mismatch(SEG5 + ".partial", wal_segment(SEG5)[:40]) is None


def test_swapped_and_replayed_segments_are_named() -> None:
    older = wal_segment("000000010000000A00000004")
    problem = walpage.segment_mismatch(SEG5, older)
    assert problem is not None and "holds the segment at A/4000000, not A/5000000" in problem


def test_a_newer_timeline_under_an_older_name_is_refused_but_a_parent_page_is_not() -> None:
    tl2 = wal_segment("000000020000000A00000005")
    assert "timeline 2, newer than its name's 1" in (walpage.segment_mismatch(SEG5, tl2) or "")
    # the first segment of timeline 2 starts with a page copied from timeline 1
    assert walpage.segment_mismatch("000000020000000A00000005", wal_segment(SEG5)) is None


def test_a_foreign_cluster_is_named_with_both_identifiers() -> None:
    foreign = wal_segment(SEG5, system_identifier=42)
    problem = walpage.segment_mismatch(SEG5, foreign, {TEST_SYSTEM_IDENTIFIER})
    assert problem is not None and "system identifier 42" in problem and str(TEST_SYSTEM_IDENTIFIER) in problem
    assert walpage.segment_mismatch(SEG5, foreign) is None  # no identity known: address and timeline only


def test_not_a_segment_at_all() -> None:
    assert "does not start with a WAL segment header" in (walpage.segment_mismatch(SEG5, b"\0" * 64) or "")
    assert walpage.parse_segment_header(b"short") is None
    assert walpage.segment_mismatch("00000002.history", b"") is None  # not a segment: not judged here


def test_history_files_are_checked_against_their_timeline() -> None:
    three = b"1\t0/5000100\tno recovery target specified\n2\t0/7000000\tbefore 2026-12-05\n"
    assert walpage.history_mismatch("00000003.history", three) is None
    assert "history of a later timeline" in (walpage.history_mismatch("00000002.history", three) or "")
    assert "lists no parent" in (walpage.history_mismatch("00000004.history", b"# nothing\n") or "")
    assert "out of order" in (walpage.history_mismatch("00000004.history", b"2\t0/7\tx\n1\t0/5\ty\n") or "")
    assert "not a timeline history" in (walpage.history_mismatch("00000004.history", b"\xff\xfe") or "")


def test_pg_control_and_segment_files_are_read_without_a_connection(tmp_path) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes((12345).to_bytes(8, "little") + b"rest")
    assert control.system_identifier(str(tmp_path)) == 12345
    assert control.system_identifier(str(tmp_path / "missing")) is None
    assert control.parse_system_identifier(b"short") is None
    (tmp_path / SEG5).write_bytes(wal_segment(SEG5))
    header = walpage.read_segment_header(str(tmp_path / SEG5))
    assert header is not None and header.system_identifier == TEST_SYSTEM_IDENTIFIER


def test_the_streaming_check_reads_the_header_across_chunks_of_any_size() -> None:
    for size in (1, 7, 40, 65536):
        for name, content, ok in (
            (SEG5, wal_segment(SEG5), True),
            (SEG5, wal_segment("000000010000000A00000004"), False),
        ):
            check = walpage.ContentCheck(name, f"wal/{name}", {TEST_SYSTEM_IDENTIFIER})
            try:
                for i in range(0, 4096, size):
                    check.feed(content[i : i + size])
                check.finish()
                assert ok, f"a swapped segment passed in chunks of {size}"
            except IntegrityError as exc:
                assert not ok and "A/4000000" in str(exc)
