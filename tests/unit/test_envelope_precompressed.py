"""A stream the server already compressed (pg_basebackup --compress=server-zstd) stored as it is:
it reads back as an ordinary zstd object, its plaintext is counted, and a stream that is not one
whole zstd frame is refused before anything looks stored."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import zstandard

from opsdb.errors import IntegrityError
from opsdb.repo.envelope import Codec, get_object, put_object
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.compress import ZstdPassThrough
from opsdb.stream.crypto import EncryptionKey
from opsdb.stream.stages import CHUNK_SIZE

KEY = EncryptionKey.from_secret(bytes(range(32)))
NAME = "clusters/main/backups/20240101T000000Z-F/base.tar"


def _server_stream(plain: bytes) -> bytes:
    """A zstd frame as the server writes it: no content size, no content checksum."""
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=False, write_content_size=False)
    return cctx.compress(plain)


def _pieces(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
@pytest.mark.parametrize("n", [1, CHUNK_SIZE + 7, 5 * CHUNK_SIZE])
def test_a_server_compressed_stream_is_stored_as_it_is_and_reads_back(key: EncryptionKey | None, n: int) -> None:
    plain = (os.urandom(n // 3) + b"heap page " * n)[:n]
    compressed = _server_stream(plain)
    storage, counted = MemoryStorage(), []
    codec = Codec("zstd", key=key)
    chunks = _pieces(compressed)
    stored = put_object(
        storage,
        NAME,
        chunks,
        codec,
        plaintext_digest=False,
        precompressed=True,
        on_bytes=counted.append,
        system_identifier=7,
    )
    assert stored.size == n and sum(counted) == n  # the plaintext, counted by decoding it once
    assert stored.digest_of == "compressed" and stored.stages[0] == "zstd"
    keys = {KEY.id: KEY} if key else {}
    assert b"".join(get_object(storage, NAME, keys, system_identifiers={"7"})) == plain


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: c[: len(c) // 2], "truncated"),
        (lambda c: c + b"\x00" * 9, "after the end"),
        (lambda c: b"\x00" * 8 + c, "corrupt"),
    ],
    ids=["cut-short", "trailing-bytes", "not-zstd"],
)
def test_a_damaged_server_stream_is_refused_when_stored(damage: Callable[[bytes], bytes], message: str) -> None:
    compressed = damage(_server_stream(os.urandom(1000) + b"x" * 300_000))
    storage = MemoryStorage()
    with pytest.raises(IntegrityError, match=message):
        put_object(storage, NAME, _pieces(compressed), Codec("zstd"), plaintext_digest=False, precompressed=True)
    assert not list(storage.list(""))  # nothing that looks stored


def test_only_zstd_with_a_compressed_digest_can_be_precompressed() -> None:
    with pytest.raises(ValueError):
        put_object(MemoryStorage(), NAME, [b""], Codec("gzip"), plaintext_digest=False, precompressed=True)
    with pytest.raises(ValueError):
        put_object(MemoryStorage(), NAME, [b""], Codec("zstd"), plaintext_digest=True, precompressed=True)


def test_a_server_stream_whose_blocks_do_not_decode_is_refused() -> None:
    # block headers intact (the frame walker passes them), the compressed bytes inside damaged
    plain = b"".join(b"row %d of the table with some text\n" % i for i in range(100_000))
    damaged = bytearray(_server_stream(plain))
    damaged[16:24] = bytes(b ^ 0xFF for b in damaged[16:24])
    with pytest.raises(IntegrityError, match="zstd: .*corrupt"):
        put_object(MemoryStorage(), NAME, [bytes(damaged)], Codec("zstd"), plaintext_digest=False, precompressed=True)


def test_the_pass_through_decodes_as_zstd() -> None:
    plain = b"base.tar " * 50_000
    assert b"".join(ZstdPassThrough().decode([_server_stream(plain)])) == plain


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x28\xb5\x2f\xfd" + bytes([0x28]), "reserved bit"),  # frame header descriptor with bit 3 set
        (b"\x28\xb5\x2f\xfd" + bytes([0x20, 0x05, 0x07, 0x00, 0x00]), "invalid zstd block header"),  # block type 3
    ],
    ids=["reserved-bit", "reserved-block-type"],
)
def test_frames_the_walker_refuses(frame: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        list(ZstdPassThrough().encode([frame]))
