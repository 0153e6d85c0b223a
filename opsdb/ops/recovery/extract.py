"""Streaming, guarded tar extraction: a stored tar object straight into a directory.

The object is read through get_object (download, decryption, decompression, hashing: all
authenticated chunk by chunk) on a prefetch thread, at most QUEUE_CHUNKS chunks of about 1 MiB
ahead, while this thread writes the files (ops/recovery/tarstream.TarExtractor: large writes straight out of
the chunks, every member checked like tarfile's "data" filter). Nothing is staged. After the tar's
end marker the rest of the object is still read, so its trailer (plaintext size and SHA-256) is
verified before the restore counts as done.

Measured (bench/backup.py, 2 cores): depth 2 keeps both cores busy; deeper queues only add memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from opsdb.errors import IntegrityError, OperationFailed
from opsdb.ops.recovery.tarstream import TarExtractor, UnsafeTarMember
from opsdb.repo import envelope
from opsdb.storage.base import Storage
from opsdb.stream.stages import prefetch

QUEUE_CHUNKS = 2

__all__ = ["QUEUE_CHUNKS", "UnsafeTarMember", "extract_object"]


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
        for chunk in envelope.get_object(storage, key, keys, decode_ahead=QUEUE_CHUNKS):
            counted += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk

    extractor = TarExtractor(dest)
    chunks = prefetch(counting(), depth=QUEUE_CHUNKS)
    try:
        for chunk in chunks:  # to the object's end: the trailer and digest are checked there
            extractor.feed(chunk)
        extractor.close()
        if not extractor.ended and extractor.members == 0:
            raise IntegrityError(f"object {key} is not a readable tar: no members and no end marker")
    except UnsafeTarMember as exc:
        raise IntegrityError(f"object {key} holds an unsafe tar member: {exc}") from None
    except IntegrityError as exc:
        if exc.message.startswith("object "):
            raise
        raise IntegrityError(f"object {key} is not a readable tar: {exc.message}") from None
    except OSError as exc:
        raise OperationFailed(f"unable to extract {key} into {dest}: {exc}") from None
    finally:
        extractor.abort()
        chunks.close()  # type: ignore[attr-defined]  # a generator: closing it ends its download now
    return counted
