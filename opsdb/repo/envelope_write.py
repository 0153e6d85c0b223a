"""Writing objects: compress, encrypt and store a stream under its key inside an envelope
(the format: envelope_format), in bounded memory, with the trailer that lets a reader check it."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opsdb.errors import IntegrityError, UsageError
from opsdb.repo.envelope_format import (
    CIPHER,
    COMPRESSED_DIGEST,
    IDENTITY_BOUND,
    METADATA_DIGEST_LIMIT,
    PLAINTEXT_DIGEST,
    TRAILER,
    TRAILER_BOUND,
    TRAILER_MAGIC,
    ByteCounter,
    Codec,
    StoredObject,
    chain_one,
    encode_header,
    meters,
)
from opsdb.repo.identity import ObjectIdentity
from opsdb.storage.base import Storage
from opsdb.stream.compress import ZstdPassThrough, compression_stage
from opsdb.stream.crypto import cipher_stage


def put_object(
    storage: Storage,
    key: str,
    chunks: Iterable[bytes],
    codec: Codec,
    *,
    if_absent: bool = False,
    on_bytes: Callable[[int], None] | None = None,
    plaintext_digest: bool = True,
    system_identifier: int | str | None = None,
    bind: bool = True,
    precompressed: bool = False,
) -> StoredObject:
    """Compress, encrypt (when codec.key) and store `chunks` under `key` in bounded memory.

    precompressed=True: `chunks` are already one zstd frame (a server-compressed base backup, with
    codec.compression "zstd"); they are stored as they are, checked and counted on the way
    (stream/compress.ZstdPassThrough), and on_bytes counts their plaintext. The digest is then one
    of the compressed bytes.

    plaintext_digest=False makes the trailer digest one of the compressed bytes: for big objects
    nobody compares with a local file's SHA-256 (backups, dumps). The object is bound to its key's
    identity and `system_identifier` (envelope version 3); bind=False writes the versions 1 and 2
    of earlier releases (for compatibility tests)."""
    if codec.key is None and codec.require_encryption:
        raise UsageError(
            f"unable to store {key}: encryption.required is set but no key is configured",
            hint="set encryption.key_file (made by `opsdb key generate PATH`) or encryption.key_env",
        )
    if precompressed and (codec.compression != "zstd" or plaintext_digest):
        raise ValueError("only a zstd stream stored with a digest of its compressed bytes can be precompressed")
    passthrough = ZstdPassThrough(on_bytes) if precompressed else None
    compressor = passthrough or compression_stage(codec.compression, codec.level, codec.threads)
    stages = tuple(s for s in (compressor.name, CIPHER if codec.key else None) if s and s != "none")
    digest_of = "plaintext" if plaintext_digest else "compressed"
    sysid = system_identifier if system_identifier is not None else codec.system_identifier
    identity = ObjectIdentity.of_key(key, sysid) if bind else None
    version = IDENTITY_BOUND if bind else (PLAINTEXT_DIGEST if plaintext_digest else COMPRESSED_DIGEST)
    header = encode_header(
        stages, codec.compression, codec.key.id if codec.key else None, version, identity=identity, digest_of=digest_of
    )

    head, rest = _lookahead(chunks, METADATA_DIGEST_LIMIT)
    metadata = {"opsdb-envelope": str(version), "opsdb-stages": ",".join(stages) or "none"}
    if codec.key is not None:
        metadata["opsdb-key-id"] = codec.key.id
    elif rest is None and passthrough is None:
        # small and unencrypted: record size and digest for a cheap comparison without reading.
        # (Encrypted objects never publish a plaintext digest: it would confirm guesses of content.)
        sha = hashlib.sha256()
        for piece in head:
            sha.update(piece)
        metadata["opsdb-size"] = str(sum(len(p) for p in head))
        metadata["opsdb-sha256"] = sha.hexdigest()

    plain, digest = meters(digest_of)
    finished: list[bool] = []

    counted = None if passthrough else on_bytes  # a pass-through counts the plaintext it decodes

    def plaintext() -> Iterator[bytes]:
        head.reverse()
        while head:  # pop, so the lookahead is not kept alive for the whole stream
            yield _progress(head.pop(), counted)
        for chunk in rest or ():
            yield _progress(chunk, counted)

    def plain_size() -> int:
        return passthrough.plain_size if passthrough else plain.size

    def inner() -> Iterator[bytes]:
        crc = 0
        pieces = compressor.encode(plain.wrap(plaintext()))
        if digest is not plain:
            pieces = digest.wrap(pieces)
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
            yield piece
        if identity is None:
            yield TRAILER.pack(TRAILER_MAGIC, plain_size(), bytes.fromhex(digest.sha256), crc)
        else:
            yield TRAILER_BOUND.pack(TRAILER_MAGIC, plain_size(), bytes.fromhex(digest.sha256), crc, identity.digest())
        finished.append(True)

    body: Iterable[bytes] = inner()
    if codec.key is not None:
        body = cipher_stage(codec.key, context=header).encode(body)
    stored = ByteCounter()
    storage.put(key, stored.wrap(chain_one(header, body)), if_absent=if_absent, metadata=metadata)
    if not finished:  # a driver that stops reading early must not pass for a stored object
        raise IntegrityError(f"unable to store {key}: the storage driver did not consume the whole stream")
    key_id = codec.key.id if codec.key else None
    return StoredObject(key, plain_size(), stored.size, digest.sha256, stages, key_id, digest_of)


def put_json(
    storage: Storage,
    key: str,
    doc: Any,
    codec: Codec,
    *,
    if_absent: bool = False,
    system_identifier: int | str | None = None,
) -> StoredObject:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return put_object(storage, key, [data], codec, if_absent=if_absent, system_identifier=system_identifier)


def _lookahead(chunks: Iterable[bytes], limit: int) -> tuple[list[bytes], Iterator[bytes] | None]:
    """Read up to `limit` bytes ahead. Returns (head, None) when that was the whole stream."""
    it = iter(chunks)
    head: list[bytes] = []
    size = 0
    for chunk in it:
        head.append(chunk)
        size += len(chunk)
        if size > limit:
            return head, it
    return head, None


def _progress(chunk: bytes, on_bytes: Callable[[int], None] | None) -> bytes:
    if on_bytes is not None:
        on_bytes(len(chunk))
    return chunk
