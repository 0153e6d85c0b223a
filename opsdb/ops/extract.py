"""Streaming, guarded tar extraction: a stored tar object straight into a directory.

The object is read through get_object (authenticated chunk by chunk) and fed to tarfile in stream
mode ("r|"), so nothing is staged. tarfile's "data" filter refuses absolute names, names escaping
the destination, links pointing outside it, and device files. After the tar's end marker the rest
of the object is still read, so its trailer (plaintext size and SHA-256) is verified before the
restore counts as done.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from opsdb.errors import IntegrityError, OperationFailed
from opsdb.repo import envelope
from opsdb.storage.base import Storage
from opsdb.stream.stages import IterReader

COPY_BUFFER = 1024 * 1024


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

    def counting() -> Iterator[bytes]:
        nonlocal counted
        for chunk in envelope.get_object(storage, key, keys):
            counted += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk

    chunks = counting()
    reader = IterReader(chunks)
    try:
        with tarfile.open(fileobj=reader, mode="r|", copybufsize=COPY_BUFFER) as tar:  # type: ignore[call-overload]
            tar.extractall(dest, filter=_filter)
    except tarfile.FilterError as exc:
        raise IntegrityError(f"object {key} holds an unsafe tar member: {exc}") from None
    except tarfile.TarError as exc:
        raise IntegrityError(f"object {key} is not a readable tar: {exc}") from None
    except OSError as exc:
        raise OperationFailed(f"unable to extract {key} into {dest}: {exc}") from None
    for _ in chunks:  # the rest (tar padding, envelope trailer) must be read to verify the digest
        pass
    return counted


def _filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's data filter, keeping PostgreSQL's owner-only modes as they are."""
    safe = tarfile.data_filter(member, dest)
    if safe is not None and member.isreg():
        return safe.replace(mode=member.mode & 0o700, deep=False)
    return safe
