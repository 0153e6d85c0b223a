"""The S3 part-size schedule: pure arithmetic, so the 10,000-part limit is never the reason a backup fails."""

from __future__ import annotations

import pytest

from opsdb.storage.s3parts import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, max_object_size, part_size_for

MiB, GiB, TiB = 2**20, 2**30, 2**40


def test_part_size_doubles_every_thousand_parts() -> None:
    base = 16 * MiB
    assert [part_size_for(n, base) for n in (1, 1000, 1001, 2000, 2001, 3001)] == [
        base,
        base,
        2 * base,
        2 * base,
        4 * base,
        8 * base,
    ]


def test_part_size_is_capped_at_5_gib_and_never_below_the_base() -> None:
    sizes = [part_size_for(n, 16 * MiB) for n in range(1, MAX_PARTS + 1)]
    assert max(sizes) == MAX_PART_SIZE
    assert sizes == sorted(sizes)
    assert min(sizes) == 16 * MiB
    assert all(MIN_PART_SIZE <= s <= MAX_PART_SIZE for s in [part_size_for(n, MIN_PART_SIZE) for n in range(1, 10001)])


def test_part_numbers_outside_s3_limits_are_refused() -> None:
    for bad in (0, MAX_PARTS + 1):
        with pytest.raises(ValueError):
            part_size_for(bad, 16 * MiB)


def test_max_object_size_for_the_defaults() -> None:
    # 1000 parts each of 16, 32, ... 4096 MiB, then 1000 parts capped at 5 GiB
    assert max_object_size(16 * MiB) == 1000 * 16 * MiB * (1 + 2 + 4 + 8 + 16 + 32 + 64 + 128 + 256) + 1000 * 5 * GiB
    assert 12 * TiB < max_object_size(16 * MiB) < 13 * TiB
    assert max_object_size(5 * MiB) > 4.8 * TiB  # even the smallest legal part size passes the old 5 TiB mark closely
    # a fixed 8 MiB part size (boto3's default) would stop at 78 GiB
    assert 10_000 * 8 * MiB < 80 * GiB < max_object_size(8 * MiB)


def test_smaller_step_grows_faster() -> None:
    assert [part_size_for(n, 5 * MiB, step=2) for n in range(1, 6)] == [5 * MiB, 5 * MiB, 10 * MiB, 10 * MiB, 20 * MiB]
