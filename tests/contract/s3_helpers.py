"""Helpers of the S3 driver tests (both stores)."""

from __future__ import annotations

from collections.abc import Iterator

from opsdb.storage.s3 import S3Storage

MiB = 2**20
PART = 5 * MiB  # S3's smallest part size: multipart paths run on small data


def chunks_of(data: bytes, size: int = MiB + 3) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def count_calls(storage: S3Storage, operation: str) -> list[int]:
    calls: list[int] = []
    storage.client.meta.events.register(f"before-call.s3.{operation}", lambda **_: calls.append(1))
    return calls


def read_all(storage: S3Storage, key: str) -> bytes:
    with storage.open(key) as f:
        return f.read()
