"""The one place where ops turn configuration into repository adapters.

open_repository(settings, writable=...) builds the Storage from [repository]; codec_from_settings
builds the envelope Codec from [compression] and [encryption]; keyring_from_settings the read keys.
`repository(settings, writable)` bundles the three. Each goes through `RepositoryOptions`, the same
sections as plain data (what the WAL helper keeps between starts without importing the config models,
ops/wal/settings.py). Everything below ops takes these primitives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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


@dataclasses.dataclass(frozen=True)
class RepositoryOptions:
    """[repository], [compression] and [encryption] as validated plain data (JSON-safe values)."""

    storage: Mapping[str, Any]  # open_storage's keyword arguments, url included
    owner_user: str | None  # the os_user the repository's files belong to (privileges.server_user)
    compression: str
    level: int
    threads: int
    key_file: str | None
    key_env: str | None
    required: bool
    read_key_files: tuple[str, ...]

    @classmethod
    def of(cls, settings: Settings) -> RepositoryOptions:
        from opsdb.ops.common.privileges import server_user

        r, comp, enc = settings.repository, settings.compression, settings.encryption
        storage = {
            "url": r.url,
            "endpoint_url": r.endpoint_url,
            "region": r.region,
            "checksum_mode": r.checksum_mode,
            "part_size": r.part_size,
            "max_attempts": r.max_attempts,
            "object_lock_days": r.object_lock_days,
            "upload_concurrency": r.upload_concurrency,
            "conditional_writes": r.conditional_writes,
        }
        return cls(
            storage=storage,
            owner_user=server_user(settings),
            compression=comp.algorithm,
            level=comp.level,
            threads=comp.threads,
            key_file=str(enc.key_file) if enc.key_file else None,
            key_env=enc.key_env,
            required=enc.required,
            read_key_files=tuple(str(p) for p in enc.read_key_files),
        )

    @property
    def url(self) -> str:
        return str(self.storage["url"])

    def key_files(self) -> list[str]:
        """Every key file these options read (the writing key's and the older ones)."""
        return [p for p in (self.key_file, *self.read_key_files) if p]


def _options(source: Settings | RepositoryOptions) -> RepositoryOptions:
    return source if isinstance(source, RepositoryOptions) else RepositoryOptions.of(source)


def open_repository(settings: Settings | RepositoryOptions, *, writable: bool = False) -> Storage:
    """The configured repository's Storage; read-only unless `writable` (puts/deletes then refused).
    Run as root, a file:// repository's new files go to the clusters' os_user (ops/common/privileges.py)."""
    from opsdb.ops.common.privileges import handover_to

    options = _options(settings)
    account = handover_to(options.owner_user) if writable else None
    storage = open_storage(**options.storage, owner=account.owner if account is not None else None)
    if not writable:
        return ReadOnlyStorage(storage)
    storecaps.adopt_create_only(storage)  # what the store honours of create-only writes, from the marker
    return storage


def encryption_key(settings: Settings | RepositoryOptions, *, for_reading: bool = False) -> EncryptionKey | None:
    """The configured (writing) key (KeyFileError when configured but unusable), or None when none
    is set. `for_reading`: a missing file is not answered with "generate one"."""
    from opsdb.stream.crypto import load_key

    options = _options(settings)
    if not (options.key_file or options.key_env):
        return None
    return load_key(key_file=options.key_file, key_env=options.key_env, for_reading=for_reading)


def codec_from_settings(settings: Settings | RepositoryOptions, key: EncryptionKey | None = None) -> Codec:
    """How new objects are written: [compression] and, when a key is configured, encryption.
    With encryption.required and no key, writing raises (the envelope refuses)."""
    options = _options(settings)
    if key is None:
        key = encryption_key(options)
    return Codec(options.compression, options.level, options.threads, key, options.required)


def keyring_from_settings(
    settings: Settings | RepositoryOptions, key: EncryptionKey | None = None
) -> dict[str, EncryptionKey]:
    """Keys for reading, by key id (objects name the key that wrote them): the writing key and
    every key in encryption.read_key_files (older keys kept after a rotation)."""
    from opsdb.stream.crypto import load_key

    options = _options(settings)
    if key is None:
        key = encryption_key(options, for_reading=True)
    ring = {old.id: old for old in (load_key(key_file=p, for_reading=True) for p in options.read_key_files)}
    if key is not None:
        ring[key.id] = key
    return ring


def repository(settings: Settings | RepositoryOptions, *, writable: bool = False) -> Repository:
    options = _options(settings)
    key = encryption_key(options, for_reading=not writable)
    return Repository(
        open_repository(options, writable=writable),
        codec_from_settings(options, key),
        keyring_from_settings(options, key),
    )
