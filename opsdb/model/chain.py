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


def chains(records: Iterable[Any]) -> list[tuple[str, list[str]]]:
    """(full backup id, [incremental ids building on it, oldest first]) for each full backup with
    incrementals; an incremental whose chain is broken is under the first missing parent's id."""
    listed = list(records)
    by_id = {_get(r, "id"): r for r in listed}
    out: dict[str, list[str]] = {}
    for record in sorted(listed, key=lambda r: _get(r, "id")):
        if not _get(record, "parent"):
            continue
        root = _get(record, "parent")
        for _ in range(len(by_id) + 1):  # bounded walk up to the full backup (or a missing parent)
            parent = by_id.get(root)
            if parent is None or not _get(parent, "parent"):
                break
            root = _get(parent, "parent")
        out.setdefault(root, []).append(_get(record, "id"))
    return sorted(out.items())
