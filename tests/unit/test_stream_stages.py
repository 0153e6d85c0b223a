"""stages.prefetch: order, error propagation, and a consumer that stops early."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from opsdb.errors import ToolError
from opsdb.repo.envelope import Codec, put_object
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.stages import Meter, prefetch
from tests.polling import wait_until


def test_prefetch_keeps_order_and_content() -> None:
    chunks = [bytes([i]) * (i + 1) for i in range(200)]
    assert list(prefetch(iter(chunks), depth=3)) == chunks
    assert list(prefetch(iter([]))) == []


def test_prefetch_runs_the_source_in_another_thread_but_meters_everything() -> None:
    seen: set[int] = set()

    def source() -> Iterator[bytes]:
        for _ in range(10):
            seen.add(threading.get_ident())
            yield b"x" * 1000

    meter = Meter()
    assert sum(len(c) for c in prefetch(meter.wrap(source()))) == 10_000
    assert meter.size == 10_000 and seen and threading.get_ident() not in seen


def test_prefetch_raises_source_errors_in_the_consumer() -> None:
    def source() -> Iterator[bytes]:
        yield b"a"
        raise ToolError("pg_basebackup", 1, "could not connect")

    it = prefetch(source())
    assert next(it) == b"a"
    with pytest.raises(ToolError, match="pg_basebackup failed"):
        next(it)


def test_prefetch_worker_stops_when_the_consumer_stops() -> None:
    produced = []

    def endless() -> Iterator[bytes]:
        while True:
            produced.append(1)
            yield b"z"

    it = prefetch(endless(), depth=2)
    next(it)
    it.close()  # the consumer gives up (e.g. the upload failed)
    count = len(produced)

    def worker_alive() -> bool:
        return any(t.name == "opsdb-prefetch" and t.is_alive() for t in threading.enumerate())

    wait_until(lambda: not worker_alive(), "the prefetch worker to end", timeout=10)
    assert len(produced) == count  # bounded: the worker stopped when the consumer gave up


def test_put_object_passes_source_errors_through_and_stores_nothing() -> None:
    def source() -> Iterator[bytes]:
        yield b"a" * 3_000_000
        raise ToolError("pg_basebackup", 1, "server closed the connection")

    storage = MemoryStorage()
    with pytest.raises(ToolError, match="server closed the connection"):
        put_object(storage, "clusters/c/backups/b/base.tar", prefetch(source()), Codec())
    assert storage.stat("clusters/c/backups/b/base.tar") is None
