"""The AES-256-GCM chunked cipher stage: round trips, and every way of damaging a stream is caught."""

from __future__ import annotations

import os
import struct

import pytest

from opsdb.errors import IntegrityError, KeyFileError
from opsdb.stream.crypto import HEADER_SIZE, EncryptionKey, cipher_stage
from opsdb.stream.stages import CHUNK_SIZE

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE]


@pytest.fixture(scope="module")
def key() -> EncryptionKey:
    return EncryptionKey.from_secret(os.urandom(32))


@pytest.fixture(scope="module")
def other_key() -> EncryptionKey:
    return EncryptionKey.from_secret(os.urandom(32))


def encrypt(key: EncryptionKey, data: bytes, piece: int = CHUNK_SIZE, context: bytes = b"") -> bytes:
    return b"".join(cipher_stage(key, context=context).encode(data[i : i + piece] for i in range(0, len(data), piece)))


def decrypt(keys: list[EncryptionKey], blob: bytes, piece: int = 100_003, context: bytes = b"") -> bytes:
    stage = cipher_stage(keys={k.id: k for k in keys}, context=context)
    return b"".join(stage.decode(blob[i : i + piece] for i in range(0, len(blob), piece)))


def split(blob: bytes) -> tuple[bytes, list[bytes]]:
    """(header, [frame, ...]) where each frame includes its 4-byte length word."""
    header, pos, frames = blob[:HEADER_SIZE], HEADER_SIZE, []
    while pos < len(blob):
        (word,) = struct.unpack_from(">I", blob, pos)
        end = pos + 4 + (word & 0x7FFF_FFFF)
        frames.append(blob[pos:end])
        pos = end
    return header, frames


@pytest.mark.parametrize("size", SIZES)
def test_roundtrip_at_chunk_boundaries(key: EncryptionKey, size: int) -> None:
    data = os.urandom(size)
    blob = encrypt(key, data)
    assert decrypt([key], blob) == data
    _, frames = split(blob)
    assert len(frames) == -(-size // CHUNK_SIZE) + 1  # the data frames, then one empty final frame
    assert [f[0] & 0x80 for f in frames] == [0] * (len(frames) - 1) + [0x80]


def test_roundtrip_with_odd_input_pieces(key: EncryptionKey) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 17)
    assert decrypt([key], encrypt(key, data, piece=333_333), piece=7) == data


def test_empty_plaintext_has_one_final_frame(key: EncryptionKey) -> None:
    blob = encrypt(key, b"")
    header, frames = split(blob)
    assert len(frames) == 1 and frames[0][0] & 0x80
    with pytest.raises(IntegrityError, match="final chunk is missing"):
        decrypt([key], header)


def test_same_plaintext_encrypts_differently(key: EncryptionKey) -> None:
    assert encrypt(key, b"same") != encrypt(key, b"same")


def test_every_flipped_byte_is_detected(key: EncryptionKey) -> None:
    blob = encrypt(key, os.urandom(100))
    for pos in range(len(blob)):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(IntegrityError):
            decrypt([key], bytes(bad))


def test_flipped_bytes_in_a_large_stream(key: EncryptionKey) -> None:
    blob = encrypt(key, os.urandom(2 * CHUNK_SIZE + 10))
    for pos in (HEADER_SIZE + 2, HEADER_SIZE + 10, CHUNK_SIZE, len(blob) - 20, len(blob) - 1):
        bad = bytearray(blob)
        bad[pos] ^= 0x80
        with pytest.raises(IntegrityError, match="chunk|length|truncated"):
            decrypt([key], bytes(bad))


@pytest.mark.parametrize("drop", [1, 2])
def test_dropping_the_last_frames_is_detected(key: EncryptionKey, drop: int) -> None:
    header, frames = split(encrypt(key, os.urandom(3 * CHUNK_SIZE)))
    assert len(frames) == 4
    with pytest.raises(IntegrityError, match=f"truncated after chunk {3 - drop}"):
        decrypt([key], header + b"".join(frames[:-drop]))


def test_marking_an_earlier_frame_final_is_detected(key: EncryptionKey) -> None:
    header, frames = split(encrypt(key, os.urandom(2 * CHUNK_SIZE + 1)))
    forged = bytes([frames[1][0] | 0x80]) + frames[1][1:]
    with pytest.raises(IntegrityError, match="chunk 1 tag mismatch"):
        decrypt([key], header + frames[0] + forged)


@pytest.mark.parametrize("cut", [1, 3, 4, 100, CHUNK_SIZE])
def test_cut_mid_frame_is_detected(key: EncryptionKey, cut: int) -> None:
    blob = encrypt(key, os.urandom(2 * CHUNK_SIZE + 5))
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt([key], blob[: len(blob) - cut])


def test_cut_inside_header_is_detected(key: EncryptionKey) -> None:
    blob = encrypt(key, b"x")
    for cut in (0, 1, HEADER_SIZE - 1, HEADER_SIZE):
        with pytest.raises(IntegrityError, match="truncated"):
            decrypt([key], blob[:cut])


def test_reordered_frames_are_detected(key: EncryptionKey) -> None:
    header, frames = split(encrypt(key, os.urandom(3 * CHUNK_SIZE + 1)))
    swapped = [frames[1], frames[0], *frames[2:]]
    with pytest.raises(IntegrityError, match="chunk 0 tag mismatch"):
        decrypt([key], header + b"".join(swapped))


def test_frames_swapped_between_objects_are_detected(key: EncryptionKey) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 1)
    header_a, frames_a = split(encrypt(key, data))
    _, frames_b = split(encrypt(key, data))  # same key, same plaintext, same positions
    with pytest.raises(IntegrityError, match="chunk 1 tag mismatch"):
        decrypt([key], header_a + frames_a[0] + frames_b[1] + frames_a[2])


def test_appended_data_is_detected(key: EncryptionKey) -> None:
    blob = encrypt(key, b"payload")
    _, frames = split(blob)
    with pytest.raises(IntegrityError, match="after the final chunk"):
        decrypt([key], blob + frames[0])


def test_impossible_frame_length_is_refused_before_allocating(key: EncryptionKey) -> None:
    blob = bytearray(encrypt(key, b"payload"))
    blob[HEADER_SIZE : HEADER_SIZE + 4] = struct.pack(">I", 0x7FFF_FFFF)
    with pytest.raises(IntegrityError, match="impossible length"):
        decrypt([key], bytes(blob))


def test_wrong_key_with_the_same_id_fails_authentication(key: EncryptionKey, other_key: EncryptionKey) -> None:
    blob = encrypt(key, b"secret data")
    impostor = EncryptionKey(key.id, other_key.secret)
    with pytest.raises(IntegrityError, match="chunk 0 tag mismatch \\(tampered, or wrong key\\)"):
        decrypt([impostor], blob)


def test_unknown_key_id_names_the_expected_key(key: EncryptionKey, other_key: EncryptionKey) -> None:
    blob = encrypt(key, b"secret data")
    with pytest.raises(
        IntegrityError, match=f"encrypted with key {key.id}, which is not loaded \\(loaded: {other_key.id}\\)"
    ):
        decrypt([other_key], blob)


def test_decrypt_picks_the_key_named_in_the_header(key: EncryptionKey, other_key: EncryptionKey) -> None:
    assert decrypt([other_key, key], encrypt(key, b"rotated")) == b"rotated"


def test_context_is_authenticated(key: EncryptionKey) -> None:
    blob = encrypt(key, b"data", context=b"envelope header A")
    assert decrypt([key], blob, context=b"envelope header A") == b"data"
    with pytest.raises(IntegrityError, match="tag mismatch"):
        decrypt([key], blob, context=b"envelope header B")


def test_header_fields_are_authenticated(key: EncryptionKey) -> None:
    blob = bytearray(encrypt(key, b"data"))
    blob[30] ^= 1  # inside the salt
    with pytest.raises(IntegrityError, match="tag mismatch"):
        decrypt([key], bytes(blob))
    blob = bytearray(encrypt(key, b"data"))
    blob[0] ^= 1  # magic
    with pytest.raises(IntegrityError, match="bad magic"):
        decrypt([key], bytes(blob))


def test_key_id_is_a_fingerprint_not_the_key(key: EncryptionKey) -> None:
    assert len(key.id) == 16 and key.id not in key.secret.hex()
    assert key.secret.hex() not in repr(key)
    assert EncryptionKey.from_secret(key.secret).id == key.id


def test_encrypting_without_a_key_is_refused() -> None:
    with pytest.raises(KeyFileError):
        list(cipher_stage().encode([b"x"]))


def test_pipeline_compresses_then_encrypts_and_decodes_in_reverse(key: EncryptionKey) -> None:
    from opsdb.stream.compress import compression_stage
    from opsdb.stream.stages import Pipeline

    pipeline = Pipeline([compression_stage("zstd", 3), cipher_stage(key)])
    data = b"compressible " * 300_000
    encoded = b"".join(pipeline.encode([data]))
    assert pipeline.names == ["zstd", "aes256gcm"]
    assert encoded.startswith(b"OPSDBAE1") and len(encoded) < len(data) // 10  # compressed before encryption
    assert b"".join(pipeline.decode([encoded])) == data
