"""What `opsdb verify` shows while it reads: the stored bytes it has read out of the stored bytes it will
read (the progress bar's total, from one listing), and a phase line per backup and per WAL range
checked (ops/common/phases.py), so a long verify says where it is and a log search says what was proven.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO

from opsdb.errors import UsageError
from opsdb.model.lsn import contiguous_ranges, parse_wal_name
from opsdb.ops.common.phases import phase
from opsdb.repo import layout
from opsdb.storage.base import ObjectInfo, Storage


class _CountingReader:
    """A stored object's stream that hands the size of every read to the meter."""

    def __init__(self, inner: BinaryIO, count: Callable[[int], None]) -> None:
        self._inner, self._count = inner, count

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        if data:
            self._count(len(data))
        return data

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> _CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CountingStorage:
    """Reads pass through, counted in stored bytes (verify reads with several threads: one lock)."""

    def __init__(self, inner: Storage, on_bytes: Callable[[int], None]) -> None:
        self.inner, self.url, self.features = inner, inner.url, inner.features
        self._on_bytes, self._lock = on_bytes, threading.Lock()

    def _count(self, n: int) -> None:
        with self._lock:
            self._on_bytes(n)

    def open(self, key: str) -> BinaryIO:
        return _CountingReader(self.inner.open(key), self._count)  # type: ignore[return-value]  # read-only: read() and close()

    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def put(self, key: str, chunks: Iterable[bytes], **kwargs: Any) -> ObjectInfo:
        return self.inner.put(key, chunks, **kwargs)

    def delete(self, keys: Iterable[str]) -> None:
        self.inner.delete(keys)


def bytes_to_read(
    storage: Storage, keys: Iterable[str], listed: Mapping[str, int] | None, wal_sizes: Mapping[str, int]
) -> int:
    """The stored size of the objects verify will read: from the repository's listing when verify made one
    (the whole repository), else from the archive scan's sizes for WAL segments, one listing per backup
    for its objects and a stat for the few others (catalog entries, history files). A missing object
    counts 0 (verify names it)."""
    if listed is not None:
        return sum(listed.get(key, 0) for key in keys)
    total, rest, prefixes = 0, [], set()
    for key in keys:
        if key in wal_sizes:
            total += wal_sizes[key]
        else:
            rest.append(key)
            parts = key.split("/")
            if len(parts) > 4 and parts[2] == "backups":  # clusters/C/backups/ID/NAME
                prefixes.add("/".join(parts[:4]) + "/")
    sizes = {info.key: info.size for prefix in sorted(prefixes) for info in storage.list(prefix)}
    for key in rest:
        info = storage.stat(key) if key not in sizes else None
        total += sizes[key] if key in sizes else (info.size if info else 0)
    return total


def log_checked(
    cluster: str, records: Iterable[Any], keys_read: Iterable[str], problems: list[Any], segment_size: int
) -> None:
    """A phase line per backup (how many of its objects are bad) and per range of WAL segments read."""
    for record in records:
        prefix = layout.backup_prefix(cluster, record.id)
        entry = layout.catalog_entry(cluster, record.id)
        bad = sum(1 for p in problems if p.key.startswith(prefix) or p.key == entry)
        phase("verify", "backup checked", backup_id=record.id, kind=getattr(record, "kind", None), problems=bad)
    wal_prefix = layout.wal_prefix(cluster)
    segments = []
    for key in keys_read:
        with contextlib.suppress(UsageError):
            if key.startswith(wal_prefix):
                segments.append(parse_wal_name(key.rsplit("/", 1)[-1], segment_size))
    bad_names = {p.key.rsplit("/", 1)[-1][:24] for p in problems if p.key.startswith(wal_prefix)}
    for timeline, runs in sorted(contiguous_ranges(segments).items()):
        for run in runs:
            first, last = run.names(segment_size)
            bad = sum(1 for name in bad_names if first <= name <= last)
            phase(
                "verify",
                "wal checked",
                timeline=timeline,
                first=first,
                last=last,
                segments=run.last - run.first + 1,
                problems=bad,
            )
