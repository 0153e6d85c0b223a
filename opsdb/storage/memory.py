"""memory:// driver: a dict-backed store with the same semantics as the real drivers.

It is the test double for everything above storage, and what a dry-run preview can run against.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from opsdb.storage.base import Conflict, NotFound, ObjectInfo, check_key, check_metadata, check_prefix, object_url


class MemoryStorage:
    """Objects live in a dict; put copies the data, so callers cannot mutate what was stored."""

    features = frozenset({"conditional_put"})

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self._lock = threading.Lock()

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        if_absent: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        if if_absent and key in self._objects:  # fail early; the check under the lock below decides
            raise self._conflict(key)
        # Consume the whole stream before touching the dict: an exception mid-stream stores nothing.
        data = b"".join(bytes(c) for c in chunks)
        info = ObjectInfo(key=key, size=len(data), mtime=time.time(), metadata=meta)
        with self._lock:
            if if_absent and key in self._objects:
                raise self._conflict(key)
            self._objects[key] = (data, info)
        return info

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        with self._lock:
            entry = self._objects.get(key)
        if entry is None:
            raise NotFound(f"unable to open {self._where(key)}: no such object")
        return io.BytesIO(entry[0])

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        with self._lock:
            entry = self._objects.get(key)
        return None if entry is None else _copy(entry[1])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        with self._lock:
            found = sorted((k, info) for k, (_, info) in self._objects.items() if k.startswith(prefix))
        return iter([_copy(info) for _, info in found])

    def delete(self, keys: Iterable[str]) -> None:
        keys = [check_key(k) for k in keys]
        with self._lock:
            for key in keys:
                self._objects.pop(key, None)

    def _where(self, key: str) -> str:
        return object_url(self.url, key)

    def _conflict(self, key: str) -> Conflict:
        return Conflict(f"unable to put {self._where(key)}: object already exists")


def _copy(info: ObjectInfo) -> ObjectInfo:
    return ObjectInfo(key=info.key, size=info.size, mtime=info.mtime, metadata=dict(info.metadata))
