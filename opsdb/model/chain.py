"""Chains of incremental backups over catalog records: pure functions (records or dicts alike).

An incremental backup names its `parent`; following parents ends at a full backup. A chain is
broken when a parent is not among the records (deleted, or never committed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _get(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def chain_of(records: Iterable[Any], backup_id: str) -> list[Any]:
    """The records a restore of `backup_id` needs, full backup first; stops at a missing parent."""
    by_id = {_get(r, "id"): r for r in records}
    chain: list[Any] = []
    current = by_id.get(backup_id)
    while current is not None and len(chain) <= len(by_id):
        chain.append(current)
        parent = _get(current, "parent")
        current = by_id.get(parent) if parent else None
    return list(reversed(chain))


def broken_links(records: Iterable[Any]) -> list[tuple[str, str]]:
    """(incremental id, missing parent id) for every incremental whose parent is not among the records."""
    listed = list(records)
    ids = {_get(r, "id") for r in listed}
    return [(_get(r, "id"), _get(r, "parent")) for r in listed if _get(r, "parent") and _get(r, "parent") not in ids]
