"""Where a base backup is compressed: the server's zstd when it has it, else opsdb, and only a
refusal of compression (never another pg_basebackup failure) leads to the second attempt."""

from __future__ import annotations

from typing import Any

import pytest

from opsdb.errors import ToolError
from opsdb.ops.backup.compression import server_compression_spec, stream_with_fallback
from opsdb.repo.envelope import Codec

# what pg_basebackup prints (PostgreSQL 15-18 message texts)
NO_ZSTD = (
    "pg_basebackup: error: could not initiate base backup: ERROR:  zstd compression is not supported by this build"
)
OLD_SERVER = "pg_basebackup: error: server does not support server-side compression"
OTHER = "pg_basebackup: error: could not connect to server: Connection refused"


def test_the_spec_follows_level_and_threads() -> None:
    assert server_compression_spec(True, 15, Codec("zstd", level=1, threads=2)) == "server-zstd:level=1,workers=2"
    assert server_compression_spec(True, 18, Codec("zstd", level=3, threads=0)) == "server-zstd:level=3"
    assert server_compression_spec(False, 15, Codec("zstd")) is None  # location = "client"
    assert server_compression_spec(True, 14, Codec("zstd")) is None  # before PostgreSQL 15
    assert server_compression_spec(True, 15, Codec("gzip", level=6)) is None  # zstd only


class Attempts:
    """A stream function that fails its first attempt with `first_error` (or not at all)."""

    def __init__(self, first_error: str | None) -> None:
        self.first_error = first_error
        self.calls: list[str | None] = []

    def __call__(self, server_compression: str | None = None) -> tuple[list[Any], dict[str, Any]]:
        self.calls.append(server_compression)
        if self.first_error is not None and len(self.calls) == 1:
            raise ToolError("pg_basebackup", 1, self.first_error, doing="taking backup X")
        return [], {"attempt": len(self.calls)}


def test_the_server_compresses_when_it_can() -> None:
    stream = Attempts(None)
    assert stream_with_fallback(stream, "server-zstd:level=1")[1:] == ({"attempt": 1}, "server")
    assert stream.calls == ["server-zstd:level=1"]


@pytest.mark.parametrize("message", [NO_ZSTD, OLD_SERVER], ids=["build-without-zstd", "server-before-15"])
def test_a_refusal_of_compression_is_retried_with_opsdb_compressing(message: str) -> None:
    stream = Attempts(message)
    assert stream_with_fallback(stream, "server-zstd:level=1")[2] == "client"
    assert stream.calls == ["server-zstd:level=1", None]


def test_any_other_failure_is_reported_as_it_is() -> None:
    stream = Attempts(OTHER)
    with pytest.raises(ToolError, match="Connection refused"):
        stream_with_fallback(stream, "server-zstd:level=1")
    assert stream.calls == ["server-zstd:level=1"]


def test_no_spec_means_one_attempt_by_opsdb() -> None:
    stream = Attempts(None)
    assert stream_with_fallback(stream, None)[2] == "client" and stream.calls == [None]
