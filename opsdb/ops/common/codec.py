"""The one place where ops turn configuration into repository adapters.

open_repository(settings, writable=...) builds the Storage from [repository]; codec_from_settings
builds the envelope Codec from [compression] and [encryption]; keyring_from_settings the read keys.
`repository(settings, writable)` bundles the three. Everything below ops takes these primitives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opsdb.repo import storecaps
from opsdb.repo.envelope import Codec
from opsdb.storage import ReadOnlyStorage, Storage, open_storage

if TYPE_CHECKING:  # types only: cryptography is imported by stream.crypto alone (and lazily)
    from opsdb.config import Settings
    from opsdb.stream.crypto import EncryptionKey


@dataclasses.dataclass(frozen=True)
class Repository:
    """A repository handle: where (storage), how to write (codec), how to read (keys by id)."""

    storage: Storage
    codec: Codec
    keys: Mapping[str, EncryptionKey]


def open_repository(settings: Settings, *, writable: bool = False) -> Storage:
    """The configured repository's Storage; read-only unless `writable` (puts/deletes then refused).
    Run as root, a file:// repository's new files go to the clusters' os_user (ops/common/privileges.py)."""
    from opsdb.ops.common.privileges import handover

    r = settings.repository
    account = handover(settings) if writable else None
    storage = open_storage(
        r.url,
        endpoint_url=r.endpoint_url,
        region=r.region,
        checksum_mode=r.checksum_mode,
        part_size=r.part_size,
        max_attempts=r.max_attempts,
        object_lock_days=r.object_lock_days,
        upload_concurrency=r.upload_concurrency,
        conditional_writes=r.conditional_writes,
        owner=account.owner if account is not None else None,
    )
    if not writable:
        return ReadOnlyStorage(storage)
    storecaps.adopt_create_only(storage)  # what the store honours of create-only writes, from the marker
    return storage


def encryption_key(settings: Settings, *, for_reading: bool = False) -> EncryptionKey | None:
    """The configured (writing) key (KeyFileError when configured but unusable), or None when none
    is set. `for_reading`: a missing file is not answered with "generate one"."""
    from opsdb.stream.crypto import load_key

    enc = settings.encryption
    if not (enc.key_file or enc.key_env):
        return None
    return load_key(key_file=enc.key_file, key_env=enc.key_env, for_reading=for_reading)


def codec_from_settings(settings: Settings, key: EncryptionKey | None = None) -> Codec:
    """How new objects are written: [compression] and, when a key is configured, encryption.
    With encryption.required and no key, writing raises (the envelope refuses)."""
    comp, enc = settings.compression, settings.encryption
    if key is None:
        key = encryption_key(settings)
    return Codec(comp.algorithm, comp.level, comp.threads, key, enc.required)


def keyring_from_settings(settings: Settings, key: EncryptionKey | None = None) -> dict[str, EncryptionKey]:
    """Keys for reading, by key id (objects name the key that wrote them): the writing key and
    every key in encryption.read_key_files (older keys kept after a rotation)."""
    from opsdb.stream.crypto import load_key

    if key is None:
        key = encryption_key(settings, for_reading=True)
    ring = {old.id: old for old in (load_key(key_file=p, for_reading=True) for p in settings.encryption.read_key_files)}
    if key is not None:
        ring[key.id] = key
    return ring


def repository(settings: Settings, *, writable: bool = False) -> Repository:
    key = encryption_key(settings, for_reading=not writable)
    return Repository(
        open_repository(settings, writable=writable),
        codec_from_settings(settings, key),
        keyring_from_settings(settings, key),
    )
