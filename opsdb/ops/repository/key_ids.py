"""Which encryption key ids a cluster's stored objects name (read from envelope headers, no key needed).

Used to say which key a read needs when the configured key file is missing: a new key cannot read
old backups, so the message must name the key to bring back rather than suggest generating one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opsdb.repo import layout
from opsdb.repo.envelope import read_header

if TYPE_CHECKING:
    from opsdb.config import Settings

SAMPLE = 20  # headers read at most: the newest catalog entries and WAL files name the keys in use


def key_ids_in_use(settings: Settings, cluster: str) -> list[str]:
    """Distinct key ids of the newest catalog entries and WAL files (newest first); [] when unencrypted."""
    from opsdb.ops.common.codec import open_repository

    storage = open_repository(settings)
    found: list[str] = []
    for prefix in (layout.catalog_prefix(cluster), layout.wal_prefix(cluster)):
        objects = sorted(storage.list(prefix), key=lambda o: o.key, reverse=True)[: SAMPLE // 2]
        for obj in objects:
            key_id = read_header(storage, obj.key).key_id
            if key_id and key_id not in found:
                found.append(key_id)
    return found
