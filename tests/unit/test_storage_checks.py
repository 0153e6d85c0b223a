"""The rules every storage driver shares (storage/base.py), the package's lazy S3 export and the
read()-able view drivers consume (stream/stages.IterReader): bad
prefixes and metadata are refused as usage errors, before any driver sees them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import opsdb.storage
from opsdb.errors import Conflict, UsageError
from opsdb.storage.base import check_metadata, check_prefix
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.stages import IterReader


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (None, "must be a string"),
        ("wal/\x00", "NUL and backslash"),
        ("wal\\x", "NUL and backslash"),
        ("wal/..", "'.' or '..'"),
        ("wal/./", "'.' or '..'"),
    ],
)
def test_bad_prefixes_are_refused(prefix: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_prefix(prefix)  # type: ignore[arg-type]  # the point: a caller passing a non-string


def test_good_prefixes_pass_unchanged() -> None:
    assert [check_prefix(p) for p in ("", "wal/", "wal/0000")] == ["", "wal/", "wal/0000"]


def test_metadata_over_two_kib_is_refused() -> None:
    with pytest.raises(UsageError, match="metadata too large"):
        check_metadata({"note": "x" * 2100})
    assert check_metadata({"opsdb-size": "12"}) == {"opsdb-size": "12"}


def test_memory_storage_refuses_a_second_create_only_write() -> None:
    storage = MemoryStorage()
    storage.put("a/b", [b"one"], if_absent=True)
    with pytest.raises(Conflict):
        storage.put("a/b", [b"two"], if_absent=True)
    with storage.open("a/b") as stored:
        assert stored.read() == b"one"


def test_the_package_exports_s3storage_lazily_and_nothing_else() -> None:
    assert opsdb.storage.S3Storage.__name__ == "S3Storage"
    with pytest.raises(AttributeError):
        _ = opsdb.storage.NoSuchDriver  # type: ignore[attr-defined]  # the point: an unknown name


def test_iter_reader_reads_whole_and_closes_its_source() -> None:
    closed: list[bool] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"ab"
            yield b"cd"
        finally:
            closed.append(True)

    reader = IterReader(chunks())
    assert reader.readable() and reader.read(1) == b"a" and reader.read() == b"bcd" and reader.read(4) == b""
    source = IterReader(chunks())
    assert source.read(1) == b"a"
    source.close()  # a consumer that stops early releases the generator
    assert closed == [True, True]
