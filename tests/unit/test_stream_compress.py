"""Compression stages: round trips at the chunk boundaries, bounded output, truncation and corruption."""

from __future__ import annotations

import os

import pytest

from opsdb.errors import IntegrityError, UsageError
from opsdb.stream.compress import compression_stage
from opsdb.stream.stages import CHUNK_SIZE

ALGOS = [("zstd", 3), ("gzip", 6), ("none", 0)]
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE]


def _data(n: int) -> bytes:
    # half random, half repetitive: compressible, but not trivially
    return (os.urandom(n // 2) + b"opsdb " * (n // 12 + 1))[:n]


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _roundtrip(stage, data: bytes, in_size: int = CHUNK_SIZE, mid_size: int = 65_537) -> bytes:
    encoded = b"".join(stage.encode(_pieces(data, in_size)))
    return b"".join(stage.decode(_pieces(encoded, mid_size)))


@pytest.mark.parametrize("algorithm,level", ALGOS)
@pytest.mark.parametrize("size", SIZES)
def test_roundtrip_at_chunk_boundaries(algorithm: str, level: int, size: int) -> None:
    data = _data(size)
    assert _roundtrip(compression_stage(algorithm, level), data) == data


@pytest.mark.parametrize("algorithm,level", ALGOS)
def test_roundtrip_with_tiny_input_chunks(algorithm: str, level: int) -> None:
    data = _data(100_000)
    assert _roundtrip(compression_stage(algorithm, level), data, in_size=7, mid_size=3) == data


def test_zstd_threads_roundtrip() -> None:
    data = _data(3 * CHUNK_SIZE + 5)
    assert _roundtrip(compression_stage("zstd", 1, threads=2), data) == data


@pytest.mark.parametrize("algorithm,level", [("zstd", 3), ("gzip", 6)])
def test_decode_output_is_bounded_for_highly_compressible_input(algorithm: str, level: int) -> None:
    stage = compression_stage(algorithm, level)
    zeros = (bytes(CHUNK_SIZE) for _ in range(64))  # 64 MiB of zero pages compress to almost nothing
    encoded = b"".join(stage.encode(zeros))
    assert len(encoded) < CHUNK_SIZE
    total = 0
    for piece in stage.decode([encoded]):  # one input chunk must not become one huge output chunk
        assert len(piece) <= CHUNK_SIZE
        total += len(piece)
    assert total == 64 * CHUNK_SIZE


@pytest.mark.parametrize("algorithm,level", [("zstd", 3), ("gzip", 6)])
@pytest.mark.parametrize("size", [0, 1, 3 * CHUNK_SIZE])
def test_truncated_stream_is_detected(algorithm: str, level: int, size: int) -> None:
    stage = compression_stage(algorithm, level)
    encoded = b"".join(stage.encode([_data(size)]))
    for cut in sorted({0, 1, len(encoded) // 2, len(encoded) - 1}):
        with pytest.raises(IntegrityError, match="truncated|corrupt"):
            b"".join(stage.decode([encoded[:cut]]))


@pytest.mark.parametrize("algorithm,level", [("zstd", 3), ("gzip", 6)])
def test_trailing_garbage_is_detected(algorithm: str, level: int) -> None:
    stage = compression_stage(algorithm, level)
    encoded = b"".join(stage.encode([_data(10_000)]))
    with pytest.raises(IntegrityError, match="after the end"):
        b"".join(stage.decode([encoded, b"x"]))


@pytest.mark.parametrize("algorithm,level", [("zstd", 3), ("gzip", 6)])
def test_flipped_byte_is_detected(algorithm: str, level: int) -> None:
    stage = compression_stage(algorithm, level)
    encoded = bytearray(b"".join(stage.encode([_data(2 * CHUNK_SIZE)])))
    for pos in (len(encoded) // 3, len(encoded) // 2, len(encoded) - 3):
        bad = bytearray(encoded)
        bad[pos] ^= 0x10
        with pytest.raises(IntegrityError):
            b"".join(stage.decode([bytes(bad)]))


def test_not_a_zstd_stream() -> None:
    with pytest.raises(IntegrityError, match="not a zstd frame"):
        b"".join(compression_stage("zstd", 3).decode([b"hello world, not zstd"]))


def test_bad_algorithm_and_level() -> None:
    with pytest.raises(UsageError, match="unknown compression algorithm"):
        compression_stage("lz4", 1)
    with pytest.raises(UsageError, match="out of range"):
        compression_stage("zstd", 30)
    with pytest.raises(UsageError, match="out of range"):
        compression_stage("gzip", 0)


def test_stage_names() -> None:
    assert [compression_stage(a, lvl).name for a, lvl in ALGOS] == ["zstd", "gzip", "none"]
