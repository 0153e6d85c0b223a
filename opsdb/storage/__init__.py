"""Repository storage: one small streaming object-store interface (base.Storage) and its drivers.

open_storage(url) picks the driver from the URL scheme. The S3 driver is imported only when an
s3:// URL is opened, so commands that never touch S3 do not pay for importing boto3.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from opsdb.errors import UsageError
from opsdb.storage.base import DryRunStorage, ObjectInfo, ReadOnlyStorage, Storage
from opsdb.storage.local import LocalStorage
from opsdb.storage.memory import MemoryStorage

__all__ = [
    "DryRunStorage",
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "ReadOnlyStorage",
    "S3Storage",
    "Storage",
    "open_storage",
]

# S3's bucket naming rules (lowercase, 3-63 chars); S3-compatible stores accept a superset of these.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_EXPECTED = "expected file:///absolute/path, s3://bucket/prefix or memory://"


def open_storage(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    checksum_mode: str = "when_required",
    part_size: int = 16 * 2**20,
    max_attempts: int = 5,
    object_lock_days: int = 0,
    upload_concurrency: int = 2,
    conditional_writes: str = "fallback",
    owner: tuple[int, int] | None = None,
) -> Storage:
    """The Storage for a repository URL. The S3 options are ignored by the other drivers; `owner`
    (uid, gid) is the account a file:// repository's new files and directories are handed to.
    A malformed or unsupported URL raises UsageError with one line naming it."""
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"invalid repository URL {url!r}: {_EXPECTED}")
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment:
        raise UsageError(f"invalid repository URL {url!r}: query strings and fragments are not allowed")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError(
                f"invalid repository URL {url!r}: file URLs take three slashes (file:///var/lib/opsdb/repo)"
            )
        path = unquote(parts.path)
        if not path.startswith("/") or path.rstrip("/") == "":
            raise UsageError(f"invalid repository URL {url!r}: the path must be absolute and not '/'")
        return LocalStorage(os.path.normpath(path), owner=owner)
    if parts.scheme == "s3":
        if not _BUCKET_RE.match(parts.netloc):
            raise UsageError(f"invalid repository URL {url!r}: {parts.netloc!r} is not a valid bucket name")
        s3_storage: Storage = _s3_module().S3Storage(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=endpoint_url,
            region=region,
            checksum_mode=checksum_mode,
            part_size=part_size,
            max_attempts=max_attempts,
            object_lock_days=object_lock_days,
            upload_concurrency=upload_concurrency,
            conditional_writes=conditional_writes,
        )
        return s3_storage
    if parts.scheme == "memory":
        return _memory(parts.netloc + parts.path)
    raise UsageError(f"unsupported repository URL {url!r}: {_EXPECTED}")


def _memory(name: str) -> MemoryStorage:
    """memory:// (or memory://<name>, which only names it) is a fresh, empty store each time it is opened."""
    name = name.strip("/")
    return MemoryStorage(f"memory://{name}/" if name else "memory://")


def _s3_module() -> Any:
    # Imported on first use, by name: boto3 loads only for s3:// repositories, and the
    # "boto3 and botocore only in the S3 driver" import contract does not see every importer of opsdb.storage
    # as reaching boto3 through this package.
    return importlib.import_module("opsdb.storage.s3")


def __getattr__(name: str) -> object:
    # `from opsdb.storage import S3Storage` works without importing boto3 for everyone else.
    if name == "S3Storage":
        return _s3_module().S3Storage
    raise AttributeError(name)
