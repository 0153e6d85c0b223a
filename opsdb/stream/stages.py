"""Composable byte-stream stages: pull-based iterators of bytes between any reader and any writer.

A Stage transforms an iterator of chunks into another iterator of chunks. A Pipeline applies its
stages in order on encode (compress, then encrypt) and in reverse on decode. Nothing here holds
more than a bounded number of chunks in memory.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed import SupportsRead

CHUNK_SIZE = 1024 * 1024  # 1 MiB: the unit every stage reads and emits (approximately)


class Stage(Protocol):
    name: str  # recorded in object envelopes, e.g. "zstd", "gzip", "aes256gcm"

    def encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]: ...

    def decode(self, chunks: Iterable[bytes]) -> Iterator[bytes]: ...


class Meter:
    """Counts bytes and SHA-256 of what flows through, without changing it."""

    def __init__(self) -> None:
        self.size = 0
        self._sha = hashlib.sha256()

    def wrap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.size += len(chunk)
            self._sha.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


class Pipeline:
    """Stages applied in order on encode and in reverse order on decode."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        out: Iterable[bytes] = chunks
        for stage in self.stages:
            out = stage.encode(out)
        return iter(out)

    def decode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        out: Iterable[bytes] = chunks
        for stage in reversed(self.stages):
            out = stage.decode(out)
        return iter(out)


def read_chunks(fileobj: SupportsRead[bytes], size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Iterate a binary file object in chunks of at most `size` bytes."""
    read = fileobj.read
    while True:
        chunk = read(size)
        if not chunk:
            return
        yield chunk


class IterReader:
    """A read()-able file-like view of a chunk iterator (for consumers like boto3 and tarfile)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [bytes(self._buf)]
            self._buf.clear()
            parts.extend(self._it)
            self._eof = True
            return b"".join(parts)
        while len(self._buf) < n and not self._eof:
            try:
                self._buf += next(self._it)
            except StopIteration:
                self._eof = True
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


_END = object()
_STOP_WAIT = 0.1  # seconds between checks of the stop flag while the hand-over queue is full


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(chunks: Iterable[bytes], depth: int = 2) -> Iterator[bytes]:
    """Iterate `chunks` in a worker thread, at most `depth` chunks ahead of the consumer.

    Reading the source (a pipe from pg_basebackup) then runs while the consumer compresses and
    encrypts (zstd, hashlib and AES-GCM release the GIL). Measured on 2 cores, zstd-1 + AES to
    moto S3: 292 -> 349 MB/s with 2 parts in flight, no gain with 1, and about +3 MB peak RSS
    (a second malloc arena), so put_object does not use it by itself: a caller with memory to
    spare wraps its source, put_object(storage, key, prefetch(chunks), codec).
    Errors from the source are raised in the consumer. If the consumer stops early, the worker
    stops at its next chunk; it is a daemon thread, so a source blocked forever cannot hang
    the process.
    """
    handover: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=_STOP_WAIT)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(chunk):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(_Failure(exc))
            return
        offer(_END)

    worker = threading.Thread(target=produce, name="opsdb-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = handover.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            assert isinstance(item, bytes)  # the worker hands over chunks, _Failure or _END
            yield item
    finally:
        stop.set()
        worker.join(timeout=10)
