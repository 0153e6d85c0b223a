"""ReadOnlyStorage and DryRunStorage around a MemoryStorage."""

from __future__ import annotations

import pytest

from opsdb.errors import Conflict, UsageError
from opsdb.storage.base import DryRunStorage, ReadOnlyStorage, Storage
from opsdb.storage.memory import MemoryStorage


@pytest.fixture
def inner() -> MemoryStorage:
    m = MemoryStorage()
    m.put("a/1", [b"one"], metadata={"x": "1"})
    m.put("a/2", [b"two"])
    return m


def test_read_only_passes_reads_and_refuses_writes(inner: MemoryStorage) -> None:
    ro = ReadOnlyStorage(inner)
    assert isinstance(ro, Storage)
    assert ro.open("a/1").read() == b"one"
    assert ro.stat("a/1").metadata == {"x": "1"}
    assert [i.key for i in ro.list("a/")] == ["a/1", "a/2"]
    with pytest.raises(UsageError, match="unable to put memory://a/3: repository opened read-only"):
        ro.put("a/3", [b"3"])
    with pytest.raises(UsageError, match="read-only"):
        ro.delete(["a/1"])
    ro.delete([])  # nothing to delete is not a write
    assert [i.key for i in inner.list("")] == ["a/1", "a/2"]
    assert "conditional_put" not in ro.features


def test_dry_run_records_and_changes_nothing(inner: MemoryStorage) -> None:
    dry = DryRunStorage(inner)
    assert isinstance(dry, Storage)
    consumed = []

    def chunks():
        for c in (b"abc", b"de"):
            consumed.append(c)
            yield c

    info = dry.put("b/new", chunks(), metadata={"k": "v"})
    assert (info.key, info.size, info.metadata) == ("b/new", 5, {"k": "v"})
    assert consumed == [b"abc", b"de"]  # the stream ran, so sizes in a preview are real
    dry.delete(["a/1", "a/2"])
    assert dry.writes == ["b/new"]
    assert dry.deletes == ["a/1", "a/2"]
    assert [i.key for i in inner.list("")] == ["a/1", "a/2"]
    assert dry.stat("b/new") is None
    assert dry.open("a/1").read() == b"one"


def test_dry_run_reports_the_conflict_a_real_run_would_hit(inner: MemoryStorage) -> None:
    dry = DryRunStorage(inner)
    with pytest.raises(Conflict):
        dry.put("a/1", [b"x"], if_absent=True)
    assert dry.writes == []
    with pytest.raises(UsageError):
        dry.delete(["../escape"])
