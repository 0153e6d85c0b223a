"""Streaming, guarded tar extraction: a stored tar object straight into a directory.

The object is read through get_object (authenticated chunk by chunk) on a reader thread, which
hands plaintext chunks through a small bounded queue (QUEUE_CHUNKS x 1 MiB) to tarfile in stream
mode ("r|") on the calling thread: download, decryption, decompression and hashing overlap with
writing files, and nothing is staged. tarfile's "data" filter refuses absolute names, names
escaping the destination, links pointing outside it, and device files. After the tar's end marker
the rest of the object is still read, so its trailer (plaintext size and SHA-256) is verified
before the restore counts as done.
"""

from __future__ import annotations

import os
import queue
import tarfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from opsdb.errors import IntegrityError, OperationFailed
from opsdb.repo import envelope
from opsdb.storage.base import Storage

COPY_BUFFER = 1024 * 1024
QUEUE_CHUNKS = 8
_END = object()


class PrefetchReader:
    """A read()-able view of a chunk iterator that is consumed on a background thread.

    At most QUEUE_CHUNKS chunks wait in memory. An error of the iterator is raised by read();
    close() stops the thread early (the consumer failed)."""

    def __init__(self, chunks: Iterable[bytes], depth: int = QUEUE_CHUNKS) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._cur = b""
        self._pos = 0
        self._done = False
        self._thread = threading.Thread(target=self._pump, args=(chunks,), name="opsdb-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self, chunks: Iterable[bytes]) -> None:
        try:
            for chunk in chunks:
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _next(self) -> bool:
        if self._done:
            return False
        item = self._queue.get()
        if item is _END:
            self._done = True
            return False
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self._cur, self._pos = item, 0
        return True

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        parts = []
        want = n if n is not None and n >= 0 else None
        while want is None or want > 0:
            if self._pos >= len(self._cur) and not self._next():
                break
            end = len(self._cur) if want is None else min(len(self._cur), self._pos + want)
            piece = self._cur[self._pos : end]
            self._pos = end
            parts.append(piece)
            if want is not None:
                want -= len(piece)
        return b"".join(parts)

    def drain(self) -> None:
        """Read to the end (so the producer finishes and verifies the whole object)."""
        while self._next():
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def extract_object(
    storage: Storage,
    key: str,
    keys: Mapping[str, Any],
    dest: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Extract the tar stored at `key` into `dest`; returns plaintext bytes read."""
    counted = 0

    def counting() -> Iterable[bytes]:
        nonlocal counted
        for chunk in envelope.get_object(storage, key, keys):
            counted += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk

    reader = PrefetchReader(counting())
    try:
        with tarfile.open(fileobj=reader, mode="r|", copybufsize=COPY_BUFFER) as tar:  # type: ignore[call-overload]
            _extract_all(tar, dest)
        reader.drain()  # the rest (tar padding, envelope trailer) must be read to verify the digest
    except UNSAFE_MEMBER_ERRORS as exc:
        raise IntegrityError(f"object {key} holds an unsafe tar member: {exc}") from None
    except tarfile.TarError as exc:
        raise IntegrityError(f"object {key} is not a readable tar: {exc}") from None
    except OSError as exc:
        raise OperationFailed(f"unable to extract {key} into {dest}: {exc}") from None
    finally:
        reader.close()
    return counted


class UnsafeTarMember(Exception):
    """A member the extraction refuses (Pythons before 3.11.4 have no tarfile filters)."""


# tarfile extraction filters arrived in 3.11.4; Debian 12's Python is 3.11.2
_HAS_FILTERS = hasattr(tarfile, "data_filter")
UNSAFE_MEMBER_ERRORS: tuple[type[Exception], ...] = (UnsafeTarMember,) + (
    (tarfile.FilterError,) if _HAS_FILTERS else ()
)


def _extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    if _HAS_FILTERS:
        tar.extractall(dest, filter=_filter)
        return
    root = os.path.realpath(dest)
    for member in tar:  # stream mode: each member is extracted as it is read
        _check_member(member, root)
        if member.isreg():
            member.mode &= 0o700
        tar.extract(member, root, set_attrs=True)


def _check_member(member: tarfile.TarInfo, root: str) -> None:
    """The same refusals as tarfile's "data" filter, for Pythons without it."""
    if os.path.isabs(member.name):
        raise UnsafeTarMember(f"{member.name!r} is an absolute path")
    target = os.path.realpath(os.path.join(root, member.name))
    if os.path.commonpath([root, target]) != root:
        raise UnsafeTarMember(f"{member.name!r} would be extracted outside the destination")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise UnsafeTarMember(f"{member.name!r} is a special file")
    if member.issym() or member.islnk():
        base = os.path.dirname(target) if member.issym() else root
        link = os.path.realpath(os.path.join(base, member.linkname))
        if os.path.isabs(member.linkname) or os.path.commonpath([root, link]) != root:
            raise UnsafeTarMember(f"{member.name!r} links outside the destination")


def _filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's data filter, keeping PostgreSQL's owner-only modes as they are."""
    safe = tarfile.data_filter(member, dest)
    if safe is not None and member.isreg():
        return safe.replace(mode=member.mode & 0o700, deep=False)
    return safe
