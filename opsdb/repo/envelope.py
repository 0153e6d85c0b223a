"""The self-describing object envelope: every stored object says how to read it back.

    object  = header | body
    header  = magic "OPSDBOBJ" (8) | envelope version (1) | n (2) | JSON (n bytes) | CRC-32 of all before (4)
    body    = encrypt?( compress( plaintext ) | trailer )
    trailer = "OPSDBEND" (8) | plaintext size (8) | SHA-256 (32) | CRC-32 of the compressed bytes (4)
              [ | SHA-256 of the object's identity (32), version 3 ]

The JSON names the stages, the compression, the key id and the opsdb version that wrote it, so a
fetch never guesses from the file name. The trailer sits inside the encryption (when there is
one), so every object, encrypted or not, is checked end to end. The envelope version says what the
trailer's SHA-256 covers:

  1  the plaintext. For objects whose plaintext digest is compared with a local file (WAL: a second
     push of the same segment must succeed, a different one must fail) and for small objects.
  2  the compressed bytes. For backups and dumps: hashing 1.5 GB of plaintext costs ~0.8 CPU-s,
     about a quarter of a whole backup's CPU on 2 cores, while the compressed stream is often 20x
     smaller. The plaintext is still checked end to end, by the compression format's own checksum
     (zstd's content checksum, which our writer always sets, gzip's CRC-32 and length) and the
     trailer's plaintext size; decompression is deterministic, so a digest of the compressed
     bytes pins the plaintext as firmly as one of the plaintext.
  3  what the header's "digest_of" says (plaintext or compressed, as above), and the object is bound
     to where it belongs: the header names its identity (cluster, the cluster's system identifier,
     kind and logical name, derived from its key by layout.object_identity) and the trailer ends
     with the SHA-256 of that identity. Encrypted, the header is the cipher's associated data, so
     the identity is authenticated; unencrypted, header and trailer must agree. A reader derives
     the identity it expects from the key it reads, so an object read under any other name fails
     with both identities named. Versions 1 and 2 (written before) stay readable; WAL read from
     them is checked by content instead (pg/walpage.py).

The CRC-32 also catches flips in compressed bytes that do not change the output (a zstd window
size, gzip's timestamp) before the digest is compared. An encrypted object authenticates its
envelope header too (the cipher's AAD). docs/encryption.md describes the format for operators.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from opsdb import __version__
from opsdb.errors import IntegrityError, UsageError
from opsdb.repo.identity import ObjectIdentity
from opsdb.storage.base import Storage
from opsdb.stream.compress import ALGORITHMS, ZstdPassThrough, compression_stage
from opsdb.stream.crypto import EncryptionKey, cipher_stage
from opsdb.stream.stages import CHUNK_SIZE, Meter, prefetch, read_chunks

MAGIC = b"OPSDBOBJ"
PLAINTEXT_DIGEST = 1  # envelope version whose trailer digest is of the plaintext
COMPRESSED_DIGEST = 2  # ... of the compressed bytes
IDENTITY_BOUND = 3  # ... of what the header says, and the object bound to its identity (written now)
ENVELOPE_VERSIONS = (PLAINTEXT_DIGEST, COMPRESSED_DIGEST, IDENTITY_BOUND)
DIGEST_OF = {PLAINTEXT_DIGEST: "plaintext", COMPRESSED_DIGEST: "compressed"}
_PREFIX = struct.Struct(">8sBH")
_CRC = struct.Struct(">I")
TRAILER_MAGIC = b"OPSDBEND"
_TRAILER = struct.Struct(">8sQ32sI")
_TRAILER_BOUND = struct.Struct(">8sQ32sI32s")
TRAILER_SIZE = _TRAILER.size  # 52 (versions 1 and 2)
TRAILER_SIZE_BOUND = _TRAILER_BOUND.size  # 84 (version 3)
CIPHER = "aes256gcm"
# Objects whose whole plaintext arrives within this many bytes also get their size and digest in
# the storage metadata (a put must send metadata before the data, so only small ones can).
METADATA_DIGEST_LIMIT = CHUNK_SIZE
_READ_SIZE = 256 * 1024  # storage reads; frames are reassembled from these in the cipher stage


@dataclasses.dataclass(frozen=True)
class Codec:
    """How to write objects: compression, and encryption when `key` is given."""

    compression: str = "zstd"
    level: int = 3
    threads: int = 0
    key: EncryptionKey | None = None
    require_encryption: bool = False
    # the cluster's system identifier, bound into every object written with this codec (version 3)
    system_identifier: str | None = None


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """What put_object stored or verify_object read back. `size` is of the plaintext; `sha256` is
    the trailer's digest, of what `digest_of` says ("plaintext" or "compressed")."""

    key: str
    size: int
    stored_size: int
    sha256: str
    stages: tuple[str, ...]
    key_id: str | None
    digest_of: str = "plaintext"


@dataclasses.dataclass
class Readback:
    """Filled in by get_object once the whole object has been read and checked: its plaintext size
    and trailer digest (the same values put_object returned when it stored the object)."""

    size: int = 0
    sha256: str = ""
    digest_of: str = ""
    version: int = 0
    identity: ObjectIdentity | None = None  # version 3: where the object says it belongs


@dataclasses.dataclass(frozen=True)
class EnvelopeHeader:
    version: int
    stages: tuple[str, ...]
    compression: str
    key_id: str | None
    created_by: str
    raw: bytes  # the exact header bytes (authenticated by the cipher as its context)
    digest_of: str = "plaintext"
    identity: ObjectIdentity | None = None  # version 3

    @property
    def encrypted(self) -> bool:
        return CIPHER in self.stages


# ------------------------------------------------------------------------------------------- write


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

    plain, digest = _meters(digest_of)
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
            yield _TRAILER.pack(TRAILER_MAGIC, plain_size(), bytes.fromhex(digest.sha256), crc)
        else:
            yield _TRAILER_BOUND.pack(TRAILER_MAGIC, plain_size(), bytes.fromhex(digest.sha256), crc, identity.digest())
        finished.append(True)

    body: Iterable[bytes] = inner()
    if codec.key is not None:
        body = cipher_stage(codec.key, context=header).encode(body)
    stored = _Counter()
    storage.put(key, stored.wrap(_chain_one(header, body)), if_absent=if_absent, metadata=metadata)
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


def encode_header(
    stages: tuple[str, ...],
    compression: str,
    key_id: str | None,
    version: int = PLAINTEXT_DIGEST,
    *,
    identity: ObjectIdentity | None = None,
    digest_of: str = "plaintext",
) -> bytes:
    doc: dict[str, Any] = {
        "compression": compression,
        "created_by": f"opsdb {__version__}",
        "key_id": key_id,
        "stages": list(stages),
    }
    if identity is not None:
        doc["identity"] = identity.to_dict()
        doc["digest_of"] = digest_of
    text = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(MAGIC, version, len(text)) + text
    return prefix + _CRC.pack(zlib.crc32(prefix))


# -------------------------------------------------------------------------------------------- read


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
        header, body = _read_header(key, raw)
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
    stored = _Counter()
    try:
        header, body = _read_header(key, stored.wrap(read_chunks(fh, _READ_SIZE)))
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
        header, _ = _read_header(key, read_chunks(fh, 4096))
    return header


def check_identity(key: str, header: EnvelopeHeader, system_identifiers: Collection[str] = ()) -> None:
    """A version 3 object read under `key` must be that key's object (versions 1-2 carry no identity)."""
    if header.identity is None:
        return
    expected = ObjectIdentity.of_key(key)
    if not header.identity.belongs(expected, system_identifiers):
        raise IntegrityError(
            f"object {key} failed its identity check: it is {header.identity.describe()}, "
            f"expected {expected.describe(system_identifiers)}",
            hint="the object was swapped, copied or moved here from another name or cluster: "
            "run `opsdb verify`, and restore from objects stored under their own names",
        )


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
        plain, meter = _meters(header.digest_of)
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
        magic, size, digest, crc = _TRAILER.unpack_from(trailer)
        if magic != TRAILER_MAGIC:
            raise IntegrityError("stream is corrupt: bad trailer (truncated or damaged)")
        if crc != payload.crc:
            raise IntegrityError("stream is corrupt: stored bytes do not match their CRC-32")
        if size != plain.size or digest.hex() != meter.sha256:
            raise IntegrityError(
                f"stream is corrupt: content does not match its checksum (stored {size} bytes sha256 "
                f"{digest.hex()[:16]}..., read {plain.size} bytes sha256 {meter.sha256[:16]}...)"
            )
        if header.identity is not None and bytes(trailer[_TRAILER.size :]) != header.identity.digest():
            raise IntegrityError("stream is corrupt: its trailer binds another identity than its header names")
        readback.size, readback.sha256, readback.digest_of = plain.size, meter.sha256, header.digest_of
        readback.version, readback.identity = header.version, header.identity
    except IntegrityError as exc:
        raise IntegrityError(f"object {key} {exc.message.removeprefix('stream ')}", hint=exc.hint) from None
    finally:
        fh.close()


def _read_header(key: str, raw: Iterator[bytes]) -> tuple[EnvelopeHeader, Iterator[bytes]]:
    buf = b""
    need = _PREFIX.size
    version = 0
    for chunk in raw:
        buf += chunk
        if len(buf) >= _PREFIX.size:
            magic, version, n = _PREFIX.unpack_from(buf)
            if magic != MAGIC:
                raise IntegrityError(f"object {key} is not an opsdb object (bad magic; written by another tool?)")
            if version not in ENVELOPE_VERSIONS:
                raise IntegrityError(
                    f"object {key} has envelope version {version}; this opsdb reads versions "
                    f"{', '.join(map(str, ENVELOPE_VERSIONS))}",
                    hint="upgrade opsdb to read objects written by a newer version",
                )
            need = _PREFIX.size + n + _CRC.size
        if len(buf) >= need:
            break
    if len(buf) < need or len(buf) < _PREFIX.size:
        raise IntegrityError(f"object {key} is truncated inside its envelope header")
    raw_header = buf[:need]
    (crc,) = _CRC.unpack_from(raw_header, need - _CRC.size)
    if crc != zlib.crc32(raw_header[: -_CRC.size]):
        raise IntegrityError(f"object {key} is corrupt: envelope header checksum mismatch")
    header = _parse_header(key, raw_header, version)
    rest = buf[need:]
    return header, _chain_one(rest, raw) if rest else raw


def _parse_header(key: str, raw: bytes, version: int) -> EnvelopeHeader:
    try:
        doc = json.loads(raw[_PREFIX.size : -_CRC.size])
        stages = tuple(str(s) for s in doc["stages"])
        compression = str(doc["compression"])
        key_id = doc["key_id"]
        created_by = str(doc.get("created_by", "?"))
        identity = None
        digest_of = DIGEST_OF.get(version, "")
        if version == IDENTITY_BOUND:
            found = doc["identity"]
            sysid = found["system_identifier"]
            identity = ObjectIdentity(
                str(found["cluster"]), None if sysid is None else str(sysid), str(found["kind"]), str(found["name"])
            )
            digest_of = str(doc["digest_of"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"object {key} is corrupt: unreadable envelope header") from None
    if digest_of not in ("plaintext", "compressed"):
        raise IntegrityError(f"object {key} is corrupt: unknown digest kind {digest_of!r} in its envelope header")
    expected = tuple(s for s in (compression, CIPHER if key_id else None) if s and s != "none")
    if compression not in ALGORITHMS or stages != expected:
        raise IntegrityError(
            f"object {key} uses stages {list(stages)} that this opsdb does not know (written by {created_by})"
        )
    return EnvelopeHeader(version, stages, compression, key_id, created_by, raw, digest_of, identity)


def _meters(digest_of: str) -> tuple[Meter | _Counter, Meter]:
    """(what counts the plaintext, what hashes the digest): one Meter for both for a plaintext
    digest; for a compressed one a size counter for the plaintext and a Meter for the compressed bytes."""
    if digest_of == "plaintext":
        meter = Meter()
        return meter, meter
    return _Counter(), Meter()


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


def _chain_one(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


class _Crc32:
    """Iterates `chunks` unchanged, keeping a running CRC-32 of them."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.crc = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.crc = zlib.crc32(chunk, self.crc)
            yield chunk


class _Counter:
    def __init__(self) -> None:
        self.size = 0

    def wrap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.size += len(chunk)
            yield chunk
