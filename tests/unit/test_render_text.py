"""render/text.py: the aligned tables every human renderer prints."""

from __future__ import annotations

from opsdb.render.text import table


def test_columns_are_as_wide_as_their_widest_cell_and_lines_end_without_spaces() -> None:
    lines = table(("name", "lag", "why"), [("r1", "12 B", None), ("replica-two", None, "slow")])
    assert lines == [
        "name         lag   why",
        "r1           12 B  -",
        "replica-two  -     slow",
    ]


def test_right_aligned_columns_and_a_table_without_rows() -> None:
    assert table(("drill", "RTO"), [("a", "1.5 s"), ("b", "71.5 s")], right={1}) == [
        "drill     RTO",
        "a       1.5 s",
        "b      71.5 s",
    ]
    assert table(("ID", "KIND"), []) == ["ID  KIND"]
