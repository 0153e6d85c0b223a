"""The object envelope over MemoryStorage: every compression x encryption combination, and damage
anywhere in a stored object is reported as IntegrityError naming the object."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib

import pytest

from opsdb.errors import Conflict, IntegrityError, NotFound, UsageError
from opsdb.repo.envelope import (
    TRAILER_SIZE,
    TRAILER_SIZE_BOUND,
    Codec,
    Readback,
    StoredObject,
    get_json,
    get_object,
    put_json,
    put_object,
    read_header,
    verify_object,
)
from opsdb.repo.wal import stored_plain_sha256
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.crypto import EncryptionKey
from opsdb.stream.stages import CHUNK_SIZE

KEY = EncryptionKey.from_secret(bytes(range(32)))
OTHER = EncryptionKey.from_secret(bytes(range(1, 33)))
KEYS = {KEY.id: KEY}
NAME = "clusters/main/backups/20240101T000000Z/base.tar"
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE]
COMBOS = [(c, k) for c in ("zstd", "gzip", "none") for k in (None, KEY)]
# envelope versions 1 (digest of the plaintext) and 2 (of the compressed bytes), written by earlier
# releases and still read; version 3 (either digest, and the object bound to its identity)
DIGESTS = pytest.mark.parametrize(
    ("plaintext_digest", "bind"),
    [(True, False), (False, False), (True, True), (False, True)],
    ids=["v1", "v2", "v3-plaintext", "v3-compressed"],
)


def _data(n: int) -> bytes:
    return (os.urandom(n // 2) + b"pg page " * (n // 16 + 1))[:n]


def _store(
    storage: MemoryStorage,
    data: bytes,
    compression: str = "zstd",
    key: EncryptionKey | None = KEY,
    plaintext_digest: bool = True,
    bind: bool = True,
) -> StoredObject:
    pieces = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    codec = Codec(compression=compression, level=3, key=key)
    return put_object(storage, NAME, pieces, codec, plaintext_digest=plaintext_digest, bind=bind)


def _header_size(blob: bytes) -> int:
    (n,) = struct.unpack_from(">H", blob, 9)  # magic (8) | version (1) | n (2) | JSON | CRC-32 (4)
    return 11 + n + 4


def _raw(storage: MemoryStorage) -> bytes:
    with storage.open(NAME) as fh:
        return fh.read()


def _replace(storage: MemoryStorage, blob: bytes) -> None:
    storage.delete([NAME])
    storage.put(NAME, [blob])


def _read(storage: MemoryStorage, keys: dict[str, EncryptionKey] = KEYS) -> bytes:
    return b"".join(get_object(storage, NAME, keys))


@pytest.mark.parametrize(
    "compression,key", COMBOS, ids=lambda v: getattr(v, "id", v) and ("enc" if isinstance(v, EncryptionKey) else v)
)
@pytest.mark.parametrize("size", SIZES)
@DIGESTS
def test_roundtrip(compression: str, key: EncryptionKey | None, size: int, plaintext_digest: bool, bind: bool) -> None:
    storage = MemoryStorage()
    data = _data(size)
    stored = _store(storage, data, compression, key, plaintext_digest, bind)
    assert stored.size == size and stored.stored_size == storage.stat(NAME).size
    if plaintext_digest or compression == "none":
        assert stored.sha256 == hashlib.sha256(data).hexdigest()
    if not plaintext_digest and key is None:  # the bytes between the header and the trailer
        blob = _raw(storage)
        trailer = TRAILER_SIZE_BOUND if bind else TRAILER_SIZE
        assert stored.sha256 == hashlib.sha256(blob[_header_size(blob) : -trailer]).hexdigest()
    assert stored.digest_of == ("plaintext" if plaintext_digest else "compressed")
    assert stored.key_id == (key.id if key else None)
    readback = Readback()
    assert b"".join(get_object(storage, NAME, KEYS, readback=readback)) == data
    assert (readback.size, readback.sha256, readback.digest_of) == (size, stored.sha256, stored.digest_of)
    assert verify_object(storage, NAME, KEYS) == stored
    header = read_header(storage, NAME)
    assert header.stages == stored.stages and header.compression == compression and header.key_id == stored.key_id
    assert header.version == (3 if bind else 1 if plaintext_digest else 2)
    assert (readback.version, readback.identity) == (header.version, header.identity)


def test_stages_recorded_in_order() -> None:
    storage = MemoryStorage()
    assert _store(storage, b"x", "zstd", KEY).stages == ("zstd", "aes256gcm")
    assert _store(storage, b"x", "gzip", None).stages == ("gzip",)
    assert _store(storage, b"x", "none", KEY).stages == ("aes256gcm",)
    assert _store(storage, b"x", "none", None).stages == ()


def test_a_fetch_reads_the_header_not_the_name() -> None:
    storage = MemoryStorage()
    data = _data(5000)
    _store(storage, data, "gzip", None)
    assert read_header(storage, NAME).created_by.startswith("opsdb ")
    assert _read(storage) == data  # no ".gz" anywhere: the envelope said gzip


@pytest.mark.parametrize("compression,key", COMBOS)
@DIGESTS
def test_every_flipped_byte_of_a_small_object_is_detected(
    compression: str, key: EncryptionKey | None, plaintext_digest: bool, bind: bool
) -> None:
    storage = MemoryStorage()
    _store(storage, b"a small catalog document " * 4, compression, key, plaintext_digest, bind)
    blob = _raw(storage)
    for pos in range(len(blob)):
        bad = bytearray(blob)
        bad[pos] ^= 0x04
        _replace(storage, bytes(bad))
        with pytest.raises(IntegrityError, match=f"^object {NAME} "):
            _read(storage)


@pytest.mark.parametrize("compression,key", COMBOS)
@DIGESTS
def test_flipped_byte_in_a_large_object_is_detected(
    compression: str, key: EncryptionKey | None, plaintext_digest: bool, bind: bool
) -> None:
    storage = MemoryStorage()
    _store(storage, _data(3 * CHUNK_SIZE), compression, key, plaintext_digest, bind)
    blob = _raw(storage)
    for pos in (200, len(blob) // 2, len(blob) - 60, len(blob) - 1):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        _replace(storage, bytes(bad))
        with pytest.raises(IntegrityError, match=f"^object {NAME} "):
            _read(storage)


@pytest.mark.parametrize("compression,key", COMBOS)
@DIGESTS
def test_truncation_anywhere_is_detected(
    compression: str, key: EncryptionKey | None, plaintext_digest: bool, bind: bool
) -> None:
    storage = MemoryStorage()
    _store(storage, _data(2 * CHUNK_SIZE + 7), compression, key, plaintext_digest, bind)
    blob = _raw(storage)
    for cut in (1, 20, 48, 49, 1000, len(blob) // 2, len(blob) - 10):
        _replace(storage, blob[: len(blob) - cut])
        with pytest.raises(IntegrityError, match=f"^object {NAME} .*(truncated|corrupt|authentication)"):
            _read(storage)


@pytest.mark.parametrize("compression,key", COMBOS)
@DIGESTS
def test_appended_bytes_are_detected(
    compression: str, key: EncryptionKey | None, plaintext_digest: bool, bind: bool
) -> None:
    storage = MemoryStorage()
    _store(storage, _data(1000), compression, key, plaintext_digest, bind)
    _replace(storage, _raw(storage) + b"\x00" * 49)
    with pytest.raises(IntegrityError, match=f"^object {NAME} "):
        _read(storage)


def test_objects_swapped_under_another_name_still_read_but_bodies_cannot_be_spliced() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    _store(a, _data(2 * CHUNK_SIZE + 1))
    _store(b, _data(2 * CHUNK_SIZE + 1))
    blob_a, blob_b = _raw(a), _raw(b)
    half = len(blob_a) // 2
    _replace(a, blob_a[:half] + blob_b[half:])
    with pytest.raises(IntegrityError, match="failed authentication"):
        _read(a)


def test_wrong_key_and_unknown_key_id() -> None:
    storage = MemoryStorage()
    _store(storage, b"secret")
    with pytest.raises(IntegrityError, match=f"object {NAME} failed authentication: chunk 0 tag mismatch"):
        _read(storage, {KEY.id: EncryptionKey(KEY.id, OTHER.secret)})
    with pytest.raises(
        IntegrityError, match=f"object {NAME} is encrypted with key {KEY.id}, which is not loaded"
    ) as info:
        _read(storage, {OTHER.id: OTHER})
    assert KEY.id in (info.value.hint or "")
    with pytest.raises(IntegrityError, match=r"not loaded \(loaded: none\)"):
        _read(storage, {})


def test_corrupt_compression_inside_the_envelope() -> None:
    storage = MemoryStorage()
    _store(storage, _data(100_000), "zstd", None)
    blob = bytearray(_raw(storage))
    header_len = _header_size(bytes(blob))
    blob[header_len] ^= 0xFF  # the zstd magic number
    _replace(storage, bytes(blob))
    with pytest.raises(IntegrityError, match=f"object {NAME} is corrupt: not a zstd frame"):
        _read(storage)


def _set_version(blob: bytes, version: int) -> bytes:
    """The object with another envelope version byte, its header CRC-32 recomputed to match."""
    end = _header_size(blob)
    header = bytearray(blob[:end])
    header[8] = version
    header[-4:] = struct.pack(">I", zlib.crc32(bytes(header[:-4])))
    return bytes(header) + blob[end:]


def test_an_encrypted_version_2_object_cannot_pass_for_version_1() -> None:
    """The version byte is in the authenticated header: relabelling what the digest covers fails."""
    storage = MemoryStorage()
    _store(storage, _data(5000), "zstd", KEY, plaintext_digest=False, bind=False)
    _replace(storage, _set_version(_raw(storage), 1))
    with pytest.raises(IntegrityError, match=f"object {NAME} failed authentication"):
        _read(storage)


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_an_unencrypted_object_relabelled_to_the_other_version_is_detected(compression: str) -> None:
    """Without a key the header is only CRC-protected, but the digest itself then no longer matches."""
    for written, relabelled in ((True, 2), (False, 1)):
        storage = MemoryStorage()
        _store(storage, _data(5000), compression, None, plaintext_digest=written, bind=False)
        _replace(storage, _set_version(_raw(storage), relabelled))
        with pytest.raises(IntegrityError, match="content does not match its checksum"):
            _read(storage)


def test_an_unknown_envelope_version_is_refused() -> None:
    storage = MemoryStorage()
    _store(storage, b"x", "zstd", None)
    _replace(storage, _set_version(_raw(storage), 4))
    with pytest.raises(
        IntegrityError, match=f"object {NAME} has envelope version 4; this opsdb reads versions 1, 2, 3"
    ):
        _read(storage)


# --- version 3: bound to where it belongs ------------------------------------------------------

WAL_A = "clusters/main/wal/0000000100000000/000000010000000000000003"
WAL_B = "clusters/main/wal/0000000100000000/000000010000000000000004"


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "enc"])
def test_an_object_read_under_another_name_names_both_identities(key: EncryptionKey | None) -> None:
    storage = MemoryStorage()
    put_object(storage, WAL_A, [b"segment three"], Codec("zstd", 1, key=key), system_identifier=7001)
    storage.put(WAL_B, [storage.open(WAL_A).read()])  # swapped or copied by hand
    with pytest.raises(IntegrityError) as caught:
        b"".join(get_object(storage, WAL_B, KEYS))
    assert caught.value.message == (
        f"object {WAL_B} failed its identity check: it is wal 000000010000000000000003 of cluster 'main' "
        "(system identifier 7001), expected wal 000000010000000000000004 of cluster 'main'"
    )
    with pytest.raises(IntegrityError, match="identity check"):
        verify_object(storage, WAL_B, KEYS)
    other_cluster = WAL_A.replace("/main/", "/other/")
    storage.put(other_cluster, [storage.open(WAL_A).read()])
    with pytest.raises(IntegrityError, match="expected wal 000000010000000000000003 of cluster 'other'"):
        b"".join(get_object(storage, other_cluster, KEYS))


def test_a_foreign_system_identifier_is_refused_when_the_reader_knows_its_own() -> None:
    storage = MemoryStorage()
    put_object(storage, WAL_A, [b"x"], Codec("zstd", 1, key=KEY), system_identifier=7001)
    assert b"".join(get_object(storage, WAL_A, KEYS, system_identifiers={"7001", "6999"})) == b"x"
    with pytest.raises(IntegrityError, match=r"\(system identifier 7001\), expected .* \(system identifier 7002\)"):
        b"".join(get_object(storage, WAL_A, KEYS, system_identifiers={"7002"}))
    assert b"".join(get_object(storage, WAL_A, KEYS)) == b"x"  # a reader that does not know: name only


def _edit_identity(blob: bytes, old: bytes, new: bytes) -> bytes:
    end = _header_size(blob)
    header = bytearray(blob[:end].replace(old, new))
    header[9:11] = struct.pack(">H", len(header) - 15)
    header[-4:] = struct.pack(">I", zlib.crc32(bytes(header[:-4])))
    return bytes(header) + blob[end:]


def test_an_edited_identity_fails_authentication_or_the_trailer_binding() -> None:
    for key, expected in ((KEY, "failed authentication"), (None, "trailer binds another identity")):
        storage = MemoryStorage()
        put_object(storage, WAL_A, [b"segment three"], Codec("zstd", 1, key=key), system_identifier=7001)
        moved = _edit_identity(storage.open(WAL_A).read(), b"000000010000000000000003", b"000000010000000000000004")
        storage.put(WAL_B, [moved])  # header rewritten to match its new name, CRC recomputed
        with pytest.raises(IntegrityError, match=expected):
            b"".join(get_object(storage, WAL_B, KEYS))


def test_objects_of_every_version_stay_readable_side_by_side() -> None:
    storage = MemoryStorage()
    codec = Codec("zstd", 1, key=KEY)
    for n, (plaintext_digest, bind) in enumerate([(True, False), (False, False), (True, True), (False, True)]):
        name = f"clusters/main/backups/20240101T000000Z-F/part{n}"
        put_object(storage, name, [b"payload %d" % n], codec, plaintext_digest=plaintext_digest, bind=bind)
        assert b"".join(get_object(storage, name, KEYS, system_identifiers={"1"})) == b"payload %d" % n
        assert read_header(storage, name).version == (3 if bind else 1 if plaintext_digest else 2)


def test_the_plaintext_digest_of_a_version_2_object_is_computed_when_asked() -> None:
    """A WAL push compares plaintext digests; an object with a compressed-bytes digest still answers."""
    storage = MemoryStorage()
    data = _data(CHUNK_SIZE + 5)
    stored = _store(storage, data, "zstd", KEY, plaintext_digest=False)
    assert stored.sha256 != hashlib.sha256(data).hexdigest()
    assert stored_plain_sha256(storage, NAME, KEYS) == hashlib.sha256(data).hexdigest()


def test_not_an_opsdb_object() -> None:
    storage = MemoryStorage()
    storage.put(NAME, [b"PGDMP plain file written by something else"])
    with pytest.raises(IntegrityError, match="not an opsdb object"):
        _read(storage)
    storage.delete([NAME])
    storage.put(NAME, [b"OPSDB"])
    with pytest.raises(IntegrityError, match="truncated inside its envelope header"):
        _read(storage)


def test_missing_object_raises_not_found_immediately() -> None:
    with pytest.raises(NotFound):
        get_object(MemoryStorage(), NAME, KEYS)


def test_require_encryption_without_a_key_stores_nothing() -> None:
    storage = MemoryStorage()
    with pytest.raises(UsageError, match="encryption.required is set but no key"):
        put_object(storage, NAME, [b"x"], Codec(require_encryption=True))
    assert storage.stat(NAME) is None
    put_object(storage, NAME, [b"x"], Codec(require_encryption=True, key=KEY))
    assert _read(storage) == b"x"


def test_if_absent_refuses_to_replace() -> None:
    storage = MemoryStorage()
    _store(storage, b"first")
    with pytest.raises(Conflict):
        put_object(storage, NAME, [b"second"], Codec(key=KEY), if_absent=True)
    assert _read(storage) == b"first"


def test_metadata() -> None:
    storage = MemoryStorage()
    data = b'{"small": "doc"}'
    _store(storage, data, "zstd", None)
    meta = storage.stat(NAME).metadata
    assert meta["opsdb-stages"] == "zstd" and meta["opsdb-envelope"] == "3"
    _store(storage, data, "zstd", None, plaintext_digest=False, bind=False)
    assert storage.stat(NAME).metadata["opsdb-envelope"] == "2"
    assert meta["opsdb-size"] == str(len(data)) and meta["opsdb-sha256"] == hashlib.sha256(data).hexdigest()
    _store(storage, data, "zstd", KEY)
    meta = storage.stat(NAME).metadata
    assert meta["opsdb-key-id"] == KEY.id and "opsdb-sha256" not in meta  # no plaintext digest in the clear
    assert not any(KEY.secret.hex() in v for v in meta.values())
    _store(storage, _data(2 * CHUNK_SIZE), "zstd", None)  # too large to know the digest before sending
    assert "opsdb-sha256" not in storage.stat(NAME).metadata


def test_on_bytes_reports_plaintext_progress() -> None:
    seen: list[int] = []
    data = _data(CHUNK_SIZE * 2 + 3)
    put_object(MemoryStorage(), NAME, [data[:CHUNK_SIZE], data[CHUNK_SIZE:]], Codec(), on_bytes=seen.append)
    assert sum(seen) == len(data)


def test_json_helpers() -> None:
    storage = MemoryStorage()
    doc = {"backup_id": "20240101T000000Z", "lsn": "0/3000028", "files": [1, 2, 3]}
    stored = put_json(storage, NAME, doc, Codec(key=KEY))
    assert get_json(storage, NAME, KEYS) == doc and stored.key_id == KEY.id
    put_object(storage, "x/not-json", [b"{nope"], Codec())
    with pytest.raises(IntegrityError, match="x/not-json is not valid JSON"):
        get_json(storage, "x/not-json", KEYS)


def test_bad_codec_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown compression"):
        put_object(MemoryStorage(), NAME, [b"x"], Codec(compression="brotli"))
