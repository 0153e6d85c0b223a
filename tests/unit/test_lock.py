"""Repository locks: exclusion, the holder's name in the refusal, heartbeats, stale takeover."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from opsdb.errors import LockHeld, OperationFailed
from opsdb.repo import layout
from opsdb.repo.lock import LockInfo, RepositoryLock
from opsdb.storage.local import LocalStorage
from opsdb.storage.memory import MemoryStorage


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make_lock(storage, clock, *, host="db1", pid=123, interval=0.0, ttl=timedelta(minutes=5)):  # type: ignore[no-untyped-def]
    return RepositoryLock(
        storage, "main", "backup", ttl=ttl, heartbeat_interval=interval, clock=clock, host=host, pid=pid
    )


def test_second_run_is_refused_naming_the_holder() -> None:
    storage, clock = MemoryStorage(), Clock()
    with make_lock(storage, clock):
        other = make_lock(storage, clock, host="db2", pid=456)
        with pytest.raises(LockHeld) as err:
            other.acquire()
        msg = str(err.value)
        assert "backup of cluster main is already running on host db1 pid 123 since 2026-11-21T10:00:00Z" in msg
        assert "lock expires at 2026-11-21T10:05:00Z" in msg
    # released: the next run gets it
    with make_lock(storage, clock, host="db2"):
        pass
    assert storage.stat(layout.lock_object("main", "backup")) is None


def test_expired_lock_of_a_dead_run_is_taken_over() -> None:
    storage, clock = MemoryStorage(), Clock()
    dead = make_lock(storage, clock)
    dead.acquire()  # never released: the process "died"
    clock.now += timedelta(minutes=4)
    with pytest.raises(LockHeld):
        make_lock(storage, clock, host="db2").acquire()
    clock.now += timedelta(minutes=2)
    fresh = make_lock(storage, clock, host="db2", pid=9)
    fresh.acquire()
    raw = json.loads(storage.open(layout.lock_object("main", "backup")).read())
    assert raw["host"] == "db2" and raw["owner"] == fresh.owner
    # the dead run, if it were alive after all, must not be able to delete the new holder's lock
    dead.release()
    assert storage.stat(layout.lock_object("main", "backup")) is not None
    fresh.release()


def test_only_one_of_two_contenders_takes_over_a_stale_lock() -> None:
    storage, clock = MemoryStorage(), Clock()
    make_lock(storage, clock).acquire()
    clock.now += timedelta(hours=1)
    stale = storage.open(layout.lock_object("main", "backup")).read()
    first = make_lock(storage, clock, host="a")
    first.acquire()
    # a second contender that saw the same stale bytes finds the takeover marker already claimed
    storage.delete([layout.lock_object("main", "backup")])
    storage.put(layout.lock_object("main", "backup"), [stale])
    with pytest.raises(LockHeld, match="taking over"):
        make_lock(storage, clock, host="b").acquire()


def test_heartbeat_extends_expiry_and_detects_loss() -> None:
    mem, clock = MemoryStorage(), Clock()
    lock = make_lock(mem, clock, interval=0.05)
    lock.acquire()
    clock.now += timedelta(minutes=3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        info = LockInfo.from_bytes(mem.open(lock.key).read(), kind="backup", cluster="main")
        if info.expires == clock.now + timedelta(minutes=5):
            break
        time.sleep(0.02)
    else:
        pytest.fail("heartbeat never renewed the lock")
    lock.check()
    # someone else replaced it (e.g. after our heartbeats could not reach the repository)
    mem.delete([lock.key])
    mem.put(lock.key, [json.dumps({"owner": "x", "host": "db9", "pid": 1}).encode()])
    deadline = time.monotonic() + 5
    while lock.lost is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(OperationFailed, match="lock was lost"):
        lock.check()
    lock.release()
    assert mem.stat(lock.key) is not None  # not ours any more: left alone


def test_foreign_lock_without_expiry_is_respected_then_expires() -> None:
    storage, clock = MemoryStorage(), Clock()
    holder = {"holder": "retention", "pid": 77, "host": "ops", "since": clock.now.isoformat()}
    storage.put(layout.lock_object("main", "backup"), [json.dumps(holder).encode()])
    with pytest.raises(LockHeld, match="held by retention.*host ops pid 77"):
        make_lock(storage, clock).acquire()
    clock.now += timedelta(hours=2)
    make_lock(storage, clock).acquire()


def test_concurrent_acquire_gives_exactly_one_winner(tmp_path) -> None:  # type: ignore[no-untyped-def]
    storage, clock = LocalStorage(str(tmp_path)), Clock()
    winners: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(4)

    def contend(name: str) -> None:
        barrier.wait()
        try:
            make_lock(storage, clock, host=name).acquire()
            winners.append(name)
        except LockHeld:
            refused.append(name)

    threads = [threading.Thread(target=contend, args=(f"h{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(winners) == 1 and len(refused) == 3


def test_lock_of_a_killed_run_on_this_host_is_taken_over_at_once() -> None:
    import socket
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()  # its pid is now free: a run that was killed
    storage, clock = MemoryStorage(), Clock()
    make_lock(storage, clock, host=socket.gethostname(), pid=child.pid).acquire()
    # a live process on this host (ourselves) is respected
    alive = MemoryStorage()
    make_lock(alive, clock, host=socket.gethostname(), pid=os.getpid()).acquire()
    with pytest.raises(LockHeld):
        make_lock(alive, clock, host=socket.gethostname(), pid=1).acquire()
    taker = make_lock(storage, clock, host=socket.gethostname(), pid=os.getpid())
    taker.acquire()
    assert json.loads(storage.open(taker.key).read())["owner"] == taker.owner
