"""The prefetch window (ops/wal/ahead.py): how many downloads run at once, against a storage double
whose reads of chosen objects wait until the test lets them through."""

from __future__ import annotations

import threading
import time
from typing import Any, BinaryIO

import pytest

from opsdb.ops.wal import push_fetch as ops_wal
from opsdb.ops.wal import spool as walspool
from opsdb.ops.wal.ahead import Prefetch
from opsdb.repo.envelope import Codec
from opsdb.storage.memory import MemoryStorage
from tests.fakes import wal_segment

NAMES = [f"0000000100000000000000{n:02X}" for n in range(1, 13)]


class GatedStorage(MemoryStorage):
    """MemoryStorage whose open() of a held object waits until release(name) (bounded)."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, threading.Event] = {}

    def hold(self, *names: str) -> None:
        for name in names:
            self.gates[name] = threading.Event()

    def release(self, *names: str) -> None:
        for name in names or list(self.gates):
            self.gates.pop(name, threading.Event()).set()

    def open(self, key: str) -> BinaryIO:
        gate = self.gates.get(key.rsplit("/", 1)[-1])
        if gate is not None:
            gate.wait(timeout=30)
        return super().open(key)


@pytest.fixture
def setup(tmp_path) -> Any:
    storage = GatedStorage()
    repo = ops_wal.WalRepo(storage, "main", Codec("zstd", 1), {})
    (tmp_path / "pg_wal").mkdir()
    segments = {name: wal_segment(name) for name in NAMES}
    for name, content in segments.items():
        path = tmp_path / "pg_wal" / name
        path.write_bytes(content)
        ops_wal.push_file(repo, str(path))
    paths = walspool.Paths(str(tmp_path / "spool"), "main", None)
    restore = tmp_path / "restore"
    (restore / "pg_wal").mkdir(parents=True)
    prefetch = Prefetch(repo, paths, "mem://", depth=8, workers=4, stale=lambda: False)
    yield storage, prefetch, restore, segments
    storage.release()
    prefetch.close()


def until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not reached within the timeout")
        time.sleep(0.005)


def test_downloads_grow_while_recovery_waits_and_shrink_while_ahead(setup) -> None:
    storage, prefetch, restore, segments = setup
    dest = str(restore / "pg_wal" / "RECOVERYXLOG")
    storage.hold(*NAMES[1:])
    assert prefetch.fetch(NAMES[0], dest, str(restore)).source == "repository"
    window = next(iter(prefetch.windows.values()))
    # the first call found nothing fetched ahead: two downloads, not the four workers allow
    assert window.parallel == 2 and set(window.in_flight) == set(NAMES[1:3])

    answers: list[Any] = []
    waiting = threading.Thread(target=lambda: answers.append(prefetch.fetch(NAMES[1], dest, str(restore))))
    waiting.start()
    until(lambda: window.parallel == 3)  # recovery waits for a segment still in flight: one more
    until(lambda: len(window.in_flight) == 3)
    storage.release(NAMES[1])
    waiting.join(timeout=30)
    # the segment it waited for is served as fetched ahead (not dropped and fetched a second time)
    assert answers[0].source == "prefetch" and open(dest, "rb").read() == segments[NAMES[1]]

    for n in (2, 3, 4):  # every call that has to wait adds one, up to the workers allowed
        storage.release(NAMES[n])
        prefetch.fetch(NAMES[n], dest, str(restore))
    assert window.parallel == 4 and len(window.in_flight) <= 4

    storage.release()
    until(lambda: not window.in_flight)
    assert len(window.published) > prefetch.depth // 2
    got = prefetch.fetch(NAMES[5], dest, str(restore))
    assert got.source == "prefetch" and got.waited_ms == 0
    assert window.parallel == 3  # well ahead: one download fewer
    assert open(dest, "rb").read() == segments[NAMES[5]]
