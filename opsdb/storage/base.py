"""The storage interface every repository driver implements, plus the wrappers around it.

Five operations: put, open, stat, list, delete. Keys are '/'-separated relative paths.
A put is atomic: nothing half-written is ever visible under its final name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol, runtime_checkable

from opsdb.errors import Conflict, NotFound, RepositoryUnavailable

__all__ = [
    "Conflict",
    "NotFound",
    "ObjectInfo",
    "RepositoryUnavailable",
    "Storage",
]


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
        """All objects whose key starts with prefix, sorted by key."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Delete keys; absent keys are ignored."""
        ...
