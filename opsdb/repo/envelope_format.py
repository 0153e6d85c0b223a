"""The envelope's format: what a stored object's header and trailer hold, and the types the
writer (envelope_write) and reader (envelope_read) share. Every stored object says how to read it back.

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
import json
import struct
import zlib
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from opsdb import __version__
from opsdb.errors import IntegrityError
from opsdb.repo.identity import ObjectIdentity
from opsdb.stream.compress import ALGORITHMS
from opsdb.stream.crypto import EncryptionKey
from opsdb.stream.stages import CHUNK_SIZE, Meter

MAGIC = b"OPSDBOBJ"
PLAINTEXT_DIGEST = 1  # envelope version whose trailer digest is of the plaintext
COMPRESSED_DIGEST = 2  # ... of the compressed bytes
IDENTITY_BOUND = 3  # ... of what the header says, and the object bound to its identity (written now)
ENVELOPE_VERSIONS = (PLAINTEXT_DIGEST, COMPRESSED_DIGEST, IDENTITY_BOUND)
DIGEST_OF = {PLAINTEXT_DIGEST: "plaintext", COMPRESSED_DIGEST: "compressed"}
_PREFIX = struct.Struct(">8sBH")
_CRC = struct.Struct(">I")
TRAILER_MAGIC = b"OPSDBEND"
TRAILER = struct.Struct(">8sQ32sI")
TRAILER_BOUND = struct.Struct(">8sQ32sI32s")
TRAILER_SIZE = TRAILER.size  # 52 (versions 1 and 2)
TRAILER_SIZE_BOUND = TRAILER_BOUND.size  # 84 (version 3)
CIPHER = "aes256gcm"
# Objects whose whole plaintext arrives within this many bytes also get their size and digest in
# the storage metadata (a put must send metadata before the data, so only small ones can).
METADATA_DIGEST_LIMIT = CHUNK_SIZE


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


def split_header(key: str, raw: Iterator[bytes]) -> tuple[EnvelopeHeader, Iterator[bytes]]:
    """The checked header at the start of `raw`, and the rest of the stream (the body)."""
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
    return header, chain_one(rest, raw) if rest else raw


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


def meters(digest_of: str) -> tuple[Meter | ByteCounter, Meter]:
    """(what counts the plaintext, what hashes the digest): one Meter for both for a plaintext
    digest; for a compressed one a size counter for the plaintext and a Meter for the compressed bytes."""
    if digest_of == "plaintext":
        meter = Meter()
        return meter, meter
    return ByteCounter(), Meter()


def chain_one(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


class ByteCounter:
    """Counts the bytes of the chunks it passes through."""

    def __init__(self) -> None:
        self.size = 0

    def wrap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.size += len(chunk)
            yield chunk
