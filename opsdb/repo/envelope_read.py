"""Reading objects back: open a stored envelope (the format: envelope_format), check its header
and identity, decrypt and decompress it, and check its trailer at the end."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from opsdb.errors import IntegrityError
from opsdb.repo.envelope_format import (
    TRAILER,
    TRAILER_MAGIC,
    TRAILER_SIZE,
    TRAILER_SIZE_BOUND,
    ByteCounter,
    EnvelopeHeader,
    Readback,
    StoredObject,
    check_identity,
    meters,
    split_header,
)
from opsdb.storage.base import Storage
from opsdb.stream.compress import compression_stage
from opsdb.stream.crypto import EncryptionKey, cipher_stage
from opsdb.stream.stages import prefetch, read_chunks

_READ_SIZE = 256 * 1024  # storage reads; frames are reassembled from these in the cipher stage


def get_object(
    storage: Storage,
    key: str,
    keys: Mapping[str, EncryptionKey],
    *,
    decode_ahead: int = 0,
    readback: Readback | None = None,
    system_identifiers: Collection[str] = (),
) -> Iterator[bytes]:
    """The plaintext of `key`, decrypted and checked. Raises NotFound at once; IntegrityError
    (naming the object) as soon as a problem is seen. Encrypted chunks are authenticated before
    they are yielded; truncation and the final digest are only known at the end, so a consumer
    must read to the end before it trusts what it wrote.

    decode_ahead > 0 reads, decrypts and decompresses on a worker thread, at most that many chunks
    ahead, while the caller's thread goes on with the plaintext: for big objects on 2+ cores
    (restores), where one thread doing all of it is the bottleneck. `readback` receives the
    object's size and digest once the end has been read and checked.

    A version 3 object must belong to `key` (and, when given, to one of `system_identifiers`):
    one that does not fails here, before any byte is returned, naming both identities."""
    fh = storage.open(key)
    try:
        raw = read_chunks(fh, _READ_SIZE)
        header, body = split_header(key, raw)
        check_identity(key, header, system_identifiers)
    except BaseException:
        fh.close()
        raise
    return _decode(key, fh, header, body, keys, readback or Readback(), decode_ahead)


def get_json(
    storage: Storage, key: str, keys: Mapping[str, EncryptionKey], *, system_identifiers: Collection[str] = ()
) -> Any:
    data = b"".join(get_object(storage, key, keys, system_identifiers=system_identifiers))
    try:
        return json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"object {key} is not valid JSON: {exc}") from None


def verify_object(
    storage: Storage,
    key: str,
    keys: Mapping[str, EncryptionKey],
    *,
    system_identifiers: Collection[str] = (),
    inspect: Callable[[bytes], None] | None = None,
    readback: Readback | None = None,
) -> StoredObject:
    """Read `key` to the end, checking everything (its identity as get_object does); return its
    plaintext size and digest. `inspect` sees every plaintext chunk (a content check may raise)."""
    fh = storage.open(key)
    stored = ByteCounter()
    try:
        header, body = split_header(key, stored.wrap(read_chunks(fh, _READ_SIZE)))
        check_identity(key, header, system_identifiers)
    except BaseException:
        fh.close()
        raise
    readback = readback or Readback()
    for chunk in _decode(key, fh, header, body, keys, readback):
        if inspect is not None:
            inspect(chunk)
    return StoredObject(
        key, readback.size, stored.size, readback.sha256, header.stages, header.key_id, readback.digest_of
    )


def read_header(storage: Storage, key: str) -> EnvelopeHeader:
    """Just the envelope header of `key` (stages, key id), without reading the body."""
    with storage.open(key) as fh:
        header, _ = split_header(key, read_chunks(fh, 4096))
    return header


def _decode(
    key: str,
    fh: Any,
    header: EnvelopeHeader,
    body: Iterator[bytes],
    keys: Mapping[str, EncryptionKey],
    readback: Readback,
    decode_ahead: int = 0,
) -> Iterator[bytes]:
    trailer = bytearray()
    try:
        inner: Iterable[bytes] = body
        if header.encrypted:
            inner = cipher_stage(keys=keys, context=header.raw).decode(inner)
        trailer_size = TRAILER_SIZE_BOUND if header.identity is not None else TRAILER_SIZE
        payload = _Crc32(_hold_back(inner, trailer_size, trailer))
        plain, meter = meters(header.digest_of)
        compressed: Iterable[bytes] = payload if meter is plain else meter.wrap(payload)
        compressor = compression_stage(header.compression, 3)
        plaintext = compressor.decode(compressed)  # drains `compressed` to its end before it ends
        if decode_ahead:
            plaintext = prefetch(plaintext, depth=decode_ahead)
        try:
            yield from plain.wrap(plaintext)
        finally:  # a prefetch worker is stopped (and joined) before fh is closed below
            close = getattr(plaintext, "close", None)
            if close is not None:
                close()
        if len(trailer) != trailer_size:
            raise IntegrityError("stream is truncated: shorter than its trailer")
        magic, size, digest, crc = TRAILER.unpack_from(trailer)
        if magic != TRAILER_MAGIC:
            raise IntegrityError("stream is corrupt: bad trailer (truncated or damaged)")
        if crc != payload.crc:
            raise IntegrityError("stream is corrupt: stored bytes do not match their CRC-32")
        if size != plain.size or digest.hex() != meter.sha256:
            raise IntegrityError(
                f"stream is corrupt: content does not match its checksum (stored {size} bytes sha256 "
                f"{digest.hex()[:16]}..., read {plain.size} bytes sha256 {meter.sha256[:16]}...)"
            )
        if header.identity is not None and bytes(trailer[TRAILER.size :]) != header.identity.digest():
            raise IntegrityError("stream is corrupt: its trailer binds another identity than its header names")
        readback.size, readback.sha256, readback.digest_of = plain.size, meter.sha256, header.digest_of
        readback.version, readback.identity = header.version, header.identity
    except IntegrityError as exc:
        raise IntegrityError(f"object {key} {exc.message.removeprefix('stream ')}", hint=exc.hint) from None
    finally:
        fh.close()


def _hold_back(chunks: Iterable[bytes], n: int, tail: bytearray) -> Iterator[bytes]:
    """Yield all but the last n bytes of the stream; leave those in `tail`."""
    for chunk in chunks:
        if len(chunk) >= n:
            if tail:
                yield bytes(tail)
            if len(chunk) > n:
                yield chunk[:-n]
            tail[:] = chunk[-n:]
        else:
            tail += chunk
            if len(tail) > n:
                yield bytes(tail[:-n])
                del tail[:-n]


class _Crc32:
    """Iterates `chunks` unchanged, keeping a running CRC-32 of them."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.crc = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.crc = zlib.crc32(chunk, self.crc)
            yield chunk
