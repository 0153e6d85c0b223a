"""The storage interface every repository driver implements, plus the wrappers around it.

Five operations: put, open, stat, list, delete. Keys are '/'-separated relative paths.
A put is atomic: nothing half-written is ever visible under its final name.

Wrappers: ReadOnlyStorage refuses writes (read-only is the default way to open a repository);
DryRunStorage records the writes and deletes it would make and changes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol, runtime_checkable

from opsdb.errors import Conflict, NotFound, RepositoryUnavailable, UsageError

__all__ = [
    "RESERVED_PREFIXES",
    "Conflict",
    "DryRunStorage",
    "NotFound",
    "ObjectInfo",
    "ReadOnlyStorage",
    "RepositoryUnavailable",
    "Storage",
    "check_key",
    "check_metadata",
    "check_prefix",
    "object_url",
]

# Name prefixes drivers use for their own files (local temp files and metadata sidecars).
# A key component may not start with one, so a driver's bookkeeping never collides with a key.
RESERVED_PREFIXES = (".tmp-", ".meta-")


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float = 0.0  # seconds since the epoch
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Storage(Protocol):
    """A flat object store. `features` may contain "fsync", "conditional_put"."""

    url: str
    features: frozenset[str]

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        if_absent: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Store the chunks under key atomically. With if_absent, raise Conflict if key exists
        (and leave the existing object untouched)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object. Raises NotFound."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """Info for key, or None if absent."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """All objects whose key starts with prefix (a plain string prefix, not a directory), sorted by key.
        The ObjectInfo of a listing has empty metadata; stat() returns it."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Delete keys; absent keys are ignored."""
        ...


def object_url(url: str, key: str) -> str:
    """The URL of key inside a repository URL, for messages: ('s3://b/p', 'x/y') -> 's3://b/p/x/y'."""
    return url + key if url.endswith("/") else f"{url}/{key}"


def _check_components(what: str, value: str, parts: list[str]) -> None:
    for part in parts:
        if part in ("", ".", ".."):
            raise UsageError(f"invalid {what} {value!r}: empty, '.' or '..' path component")
        if part.startswith(RESERVED_PREFIXES):
            raise UsageError(
                f"invalid {what} {value!r}: components may not start with {' or '.join(RESERVED_PREFIXES)}"
            )


def check_key(key: str) -> str:
    """Return key if it is a valid object key ('a/b/c', no leading or trailing '/', no '..'), else UsageError."""
    if not isinstance(key, str) or not key:
        raise UsageError(f"invalid object key {key!r}: must be a non-empty string")
    if "\x00" in key or "\\" in key:
        raise UsageError(f"invalid object key {key!r}: NUL and backslash are not allowed")
    _check_components("object key", key, key.split("/"))
    return key


def check_prefix(prefix: str) -> str:
    """Return prefix if valid for list(): '' or a key-like string that may end with '/'."""
    if not isinstance(prefix, str):
        raise UsageError(f"invalid prefix {prefix!r}: must be a string")
    if prefix == "":
        return prefix
    if "\x00" in prefix or "\\" in prefix:
        raise UsageError(f"invalid prefix {prefix!r}: NUL and backslash are not allowed")
    parts = prefix.split("/")
    if parts[-1] == "":
        parts = parts[:-1]
    # The last component may be partial ('wal/0000' matches 'wal/00000001...'), so only '..'/'.' checks apply to it.
    _check_components("prefix", prefix, parts[:-1])
    if parts and parts[-1] in ("..", "."):
        raise UsageError(f"invalid prefix {prefix!r}: '.' or '..' path component")
    return prefix


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """A validated copy of user metadata. The rules are S3's, so every driver accepts the same things:
    keys lowercase [a-z0-9_-], values printable ASCII, at most 2 KiB in all."""
    if not metadata:
        return {}
    out: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not name or any(c not in _META_KEY_CHARS for c in name):
            raise UsageError(f"invalid metadata key {name!r}: use lowercase letters, digits, '-' and '_'")
        if not isinstance(value, str) or any(not (32 <= ord(c) < 127) for c in value):
            raise UsageError(f"invalid metadata value for {name!r}: must be printable ASCII")
        total += len(name) + len(value)
        out[name] = value
    if total > 2048:
        raise UsageError(f"metadata too large: {total} bytes (limit 2048)")
    return out


_META_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class ReadOnlyStorage:
    """Reads pass through; put and delete raise UsageError. Opening read-only is the default."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.url = inner.url
        self.features = inner.features - {"conditional_put"}

    def _refuse(self, verb: str, what: str) -> UsageError:
        return UsageError(
            f"unable to {verb} {object_url(self.url, what)}: repository opened read-only",
            hint="this command only reads the repository; writing needs a command that asks for write access",
        )

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        if_absent: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        raise self._refuse("put", key)

    def open(self, key: str) -> BinaryIO:
        return self.inner.open(key)

    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            raise self._refuse("delete", keys[0] if len(keys) == 1 else f"{keys[0]} (and {len(keys) - 1} more)")


class DryRunStorage:
    """Reads pass through; put and delete are recorded in `.writes` / `.deletes` and not performed.

    A put still consumes its stream (so the caller's pipeline runs and sizes are real) and still
    raises Conflict for an if_absent put over an existing object, so a preview fails where the real
    run would. Reads do not see the recorded writes.
    """

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.url = inner.url
        self.features = inner.features
        self.writes: list[str] = []
        self.deletes: list[str] = []

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        if_absent: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        metadata = check_metadata(metadata)
        if if_absent and self.inner.stat(key) is not None:
            raise Conflict(f"unable to put {object_url(self.url, key)}: object already exists")
        size = 0
        for chunk in chunks:
            size += len(chunk)
        self.writes.append(key)
        return ObjectInfo(key=key, size=size, mtime=time.time(), metadata=metadata)

    def open(self, key: str) -> BinaryIO:
        return self.inner.open(key)

    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.deletes.append(check_key(key))
