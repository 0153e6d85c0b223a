"""Encryption keys and the AES-256-GCM chunked cipher stage. The only module that imports cryptography.

Stream layout (all integers big-endian; docs/encryption.md has the full description):

    header  = magic "OPSDBAE1" (8) | format version (1) | key id (8) | salt (32) | nonce prefix (7)
    frame*  = flags+length (4: bit 31 = final frame, bits 0-30 = len(ciphertext+tag)) | ciphertext+tag

Each object gets its own subkey, HKDF-SHA256(key, salt, info="opsdb aes-256-gcm v1" | key id), so
frames cannot be moved between objects. Frame i is sealed with nonce = prefix | i (4) | final (1)
and AAD = context | header | i (8) | final (1), where `context` is whatever the caller binds to
the stream (the object envelope header). The last frame is always an empty one with the final
flag. So a flipped byte, reordered, dropped or swapped frames, a cut after any frame (the final
frame is missing), a changed header and a wrong key all fail.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
import secrets
import stat
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from opsdb.errors import IntegrityError, KeyFileError
from opsdb.stream.stages import CHUNK_SIZE

KEY_BYTES = 32
KEY_FILE_HEADER = (
    "# opsdb encryption key v1 (AES-256, hex). Keep it secret; keep a copy: without it backups cannot be read."
)

MAGIC = b"OPSDBAE1"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sB8s32s7s")
HEADER_SIZE = _HEADER.size  # 56
_TAG = 16
_FINAL = 0x8000_0000
_MAX_FRAME = 64 * 1024 * 1024  # refuse absurd lengths from a corrupt frame header before allocating


@dataclasses.dataclass(frozen=True)
class EncryptionKey:
    """A 256-bit key and its public fingerprint `id` (16 hex digits, safe to log and store)."""

    id: str
    secret: bytes = dataclasses.field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> EncryptionKey:
        if len(secret) != KEY_BYTES:
            raise KeyFileError(f"an encryption key must be {KEY_BYTES} bytes, got {len(secret)}")
        return cls(key_id_of(secret), bytes(secret))


def key_id_of(secret: bytes) -> str:
    """A fingerprint that identifies a key without revealing it (a domain-separated HMAC)."""
    return hmac.new(secret, b"opsdb key id v1", hashlib.sha256).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- key files


def generate_key_file(path: str | os.PathLike[str], *, owner: tuple[int, int] | None = None) -> EncryptionKey:
    """Write a new random key to `path` with mode 0600 (owned by `owner` (uid, gid) when given, set
    before the key is written). Never replaces an existing file."""
    p = Path(path)
    key = EncryptionKey.from_secret(secrets.token_bytes(KEY_BYTES))
    text = f"{KEY_FILE_HEADER}\n# key id {key.id}\n{key.secret.hex()}\n".encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"key file {p} already exists; refusing to overwrite it",
            hint="an existing key may be the only way to read existing backups; choose another path",
        ) from None
    except OSError as exc:
        raise KeyFileError(f"unable to create key file {p}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is reduced by the umask, never widened; be explicit
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, text)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        p.unlink(missing_ok=True)
        raise KeyFileError(f"unable to write key file {p}: {exc.strerror}") from None
    os.close(fd)
    _fsync_dir(p.parent)
    return key


# A missing key file on a path that only reads: a new key cannot read what another key wrote.
READ_KEY_MISSING_HINT = (
    "put back the key file from your copy of it (a newly generated key cannot read existing objects)"
)


def load_key(
    *, key_file: str | os.PathLike[str] | None = None, key_env: str | None = None, for_reading: bool = False
) -> EncryptionKey:
    """The key from a key file (refused when group/others may read or write it) or from the
    environment variable named `key_env`; both hold 64 hex digits (or base64 of 32 bytes).
    `for_reading`: a missing file's hint says to put it back rather than to generate one."""
    if key_file and key_env:
        raise KeyFileError("set only one of encryption.key_file and encryption.key_env")
    if key_file:
        return _load_key_file(Path(key_file), for_reading)
    if key_env:
        value = os.environ.get(key_env)
        if value is None:
            raise KeyFileError(f"environment variable {key_env} (encryption.key_env) is not set")
        return EncryptionKey.from_secret(_parse_key_text(value, f"environment variable {key_env}"))
    raise KeyFileError("no encryption key configured: set encryption.key_file or encryption.key_env")


def _load_key_file(p: Path, for_reading: bool = False) -> EncryptionKey:
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        hint = READ_KEY_MISSING_HINT if for_reading else f"create one with: opsdb key generate {p}"
        raise KeyFileError(f"key file {p} does not exist", hint=hint) from None
    except OSError as exc:
        raise KeyFileError(f"unable to open key file {p}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # the mode of the file we actually read, not of whatever is there now
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {p} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            what = "readable" if mode & 0o044 else "writable"
            raise KeyFileError(f"key file {p} is {what} by group/others (mode {mode:04o}): chmod 600 {p}")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {p} is malformed: not a text key made by `opsdb key generate`") from None
    return EncryptionKey.from_secret(_parse_key_text(text, f"key file {p}"))


def _parse_key_text(text: str, where: str) -> bytes:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) != 1:
        raise KeyFileError(f"{where} is malformed: expected one line of 64 hex digits")
    value = lines[0]
    try:
        if len(value) == 2 * KEY_BYTES:
            return bytes.fromhex(value)
        secret = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise KeyFileError(f"{where} is malformed: expected 64 hex digits") from None
    if len(secret) != KEY_BYTES:
        raise KeyFileError(f"{where} is malformed: expected a 256-bit key (64 hex digits)")
    return secret


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------- cipher stage


def cipher_stage(
    key: EncryptionKey | None = None,
    *,
    keys: Mapping[str, EncryptionKey] | None = None,
    context: bytes = b"",
) -> CipherStage:
    """The AES-256-GCM stage. `key` encrypts; decoding picks the key named in the stream header
    from `keys` (and `key`). `context` is authenticated with every frame but not stored."""
    known = dict(keys or {})
    if key is not None:
        known[key.id] = key
    return CipherStage(key, known, context)


class CipherStage:
    name = "aes256gcm"

    def __init__(self, key: EncryptionKey | None, keys: Mapping[str, EncryptionKey], context: bytes) -> None:
        self.key = key
        self.keys = keys
        self.context = context

    def encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        if self.key is None:
            raise KeyFileError("no encryption key given to encrypt with")
        salt, prefix = secrets.token_bytes(32), secrets.token_bytes(7)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, bytes.fromhex(self.key.id), salt, prefix)
        sealer = _Sealer(_subkey(self.key, salt), prefix, self.context + header)
        yield header
        # Data frames are sealed as they arrive (nothing is held back to learn which one is last);
        # the end is marked by an extra empty frame with the final flag, which only the key holder
        # can make, so a stream cut after any data frame lacks it.
        for piece in _frame_bodies(chunks):
            yield from sealer.seal(piece, final=False)
        yield from sealer.seal(b"", final=True)

    def decode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        buf = bytearray()
        it = iter(chunks)
        opener: _Opener | None = None
        final_seen = False
        for chunk in it:
            buf += chunk
            if opener is None:
                if len(buf) < HEADER_SIZE:
                    continue
                opener = self._opener(bytes(buf[:HEADER_SIZE]))
                del buf[:HEADER_SIZE]
            pos = 0
            while len(buf) - pos >= 4:
                if final_seen:
                    raise IntegrityError("stream failed authentication: data after the final chunk")
                (word,) = struct.unpack_from(">I", buf, pos)
                length, final = word & ~_FINAL, bool(word & _FINAL)
                if length < _TAG or length > _MAX_FRAME:
                    raise IntegrityError(
                        f"stream failed authentication: chunk {opener.index} has an impossible length {length}"
                    )
                if len(buf) - pos - 4 < length:
                    break
                with memoryview(buf) as view:
                    plain = opener.open(view[pos + 4 : pos + 4 + length], final)
                pos += 4 + length
                final_seen = final
                if plain:
                    yield plain
            del buf[:pos]
        if opener is None:
            raise IntegrityError("stream failed authentication: truncated inside the encryption header")
        if buf:
            raise IntegrityError(f"stream failed authentication: truncated inside chunk {opener.index}")
        if not final_seen:
            raise IntegrityError(
                f"stream failed authentication: truncated after chunk {opener.index - 1} (the final chunk is missing)"
            )

    def _opener(self, header: bytes) -> _Opener:
        magic, version, raw_id, salt, prefix = _HEADER.unpack(header)
        if magic != MAGIC:
            raise IntegrityError("stream failed authentication: not an opsdb encrypted stream (bad magic)")
        if version != FORMAT_VERSION:
            raise IntegrityError(f"stream failed authentication: unknown encryption format version {version}")
        key_id = raw_id.hex()
        key = self.keys.get(key_id)
        if key is None:
            loaded = ", ".join(sorted(self.keys)) or "none"
            raise IntegrityError(
                f"stream is encrypted with key {key_id}, which is not loaded (loaded: {loaded})",
                hint=f"add the key file whose id is {key_id} to encryption.read_key_files (its first lines name its id)",
            )
        return _Opener(_subkey(key, salt), prefix, self.context + header)


def _frame_bodies(chunks: Iterable[bytes]) -> Iterator[bytes | bytearray | memoryview]:
    """Plaintext frame bodies of at most CHUNK_SIZE: large chunks are sliced without copying,
    small ones (gzip's output, a caller's odd reads) are gathered so frames stay near CHUNK_SIZE."""
    gathered = bytearray()
    for chunk in chunks:
        if len(chunk) < CHUNK_SIZE // 4:
            gathered += chunk
            if len(gathered) >= CHUNK_SIZE:
                yield gathered
                gathered = bytearray()
            continue
        if gathered:
            yield gathered
            gathered = bytearray()
        view = memoryview(chunk)
        for start in range(0, len(view), CHUNK_SIZE):
            yield view[start : start + CHUNK_SIZE]
    if gathered:
        yield gathered


def _subkey(key: EncryptionKey, salt: bytes) -> AESGCM:
    info = b"opsdb aes-256-gcm v1" + bytes.fromhex(key.id)
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(key.secret)
    return AESGCM(derived)


class _Sealer:
    def __init__(self, aead: AESGCM, prefix: bytes, aad: bytes) -> None:
        self.aead, self.prefix, self.aad, self.index = aead, prefix, aad, 0

    def seal(self, plain: bytes | bytearray | memoryview, final: bool) -> tuple[bytes, bytes]:
        if self.index >= 2**32:
            raise IntegrityError("stream is too long for one encrypted object (2^32 chunks)")
        nonce, aad = _nonce_aad(self.prefix, self.aad, self.index, final)
        sealed = self.aead.encrypt(nonce, plain, aad)
        self.index += 1
        return struct.pack(">I", len(sealed) | (_FINAL if final else 0)), sealed


class _Opener:
    def __init__(self, aead: AESGCM, prefix: bytes, aad: bytes) -> None:
        self.aead, self.prefix, self.aad, self.index = aead, prefix, aad, 0

    def open(self, sealed: memoryview, final: bool) -> bytes:
        nonce, aad = _nonce_aad(self.prefix, self.aad, self.index, final)
        try:
            plain = self.aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise IntegrityError(
                f"stream failed authentication: chunk {self.index} tag mismatch (tampered, or wrong key)"
            ) from None
        self.index += 1
        return plain


def _nonce_aad(prefix: bytes, aad: bytes, index: int, final: bool) -> tuple[bytes, bytes]:
    flag = b"\x01" if final else b"\x00"
    return prefix + index.to_bytes(4, "big") + flag, aad + index.to_bytes(8, "big") + flag
