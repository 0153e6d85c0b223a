"""That every object verify reads is the one its name says, beyond what the envelope binds: the
system identifiers a cluster's objects may carry (its marker's, or its backups' before markers), and
the content checks for objects written before envelope version 3 (a catalog entry's id, a WAL
segment's page headers)."""

from __future__ import annotations

import json
from typing import Any

from opsdb.errors import IntegrityError, UsageError
from opsdb.model.lsn import parse_wal_name
from opsdb.ops.proof.verify_result import Problem, VerifyResult, field_of, strip_key
from opsdb.pg import walpage
from opsdb.repo import layout, marker
from opsdb.storage.base import Storage


def cluster_identities(storage: Storage, cluster: str, records: list[Any], result: VerifyResult) -> frozenset[int]:
    """The system identifiers this cluster's objects may carry: its marker's (current and retired by
    `opsdb reinit`), or, in a repository written before markers, those its backups recorded."""
    try:
        found = marker.read_cluster_marker(storage, cluster)
    except IntegrityError as exc:
        result.problems.append(
            Problem(layout.cluster_marker(cluster), strip_key(layout.cluster_marker(cluster), exc.message))
        )
        found = None
    if found is not None:
        return marker.ArchiveProof(found, "").system_identifiers
    result.notes.append(
        f"no cluster marker {layout.cluster_marker(cluster)} yet (written by the next wal-push or backup)"
    )
    recorded = (str(field_of(r, "system_identifier") or "") for r in records)
    return frozenset(int(s) for s in recorded if s.isdigit())


class CatalogIdCheck:
    """A catalog entry's own id must be the id in its file name (one copied under another id is not)."""

    def __init__(self, key: str) -> None:
        self.key, self.data = key, bytearray()

    def feed(self, chunk: bytes) -> None:
        self.data += chunk

    def finish(self) -> None:
        expected = layout.object_identity(self.key)[2]
        try:
            found = json.loads(self.data).get("id")
        except (ValueError, AttributeError):
            return  # not JSON: the catalog listing names it
        if found != expected:
            raise IntegrityError(
                f"object {self.key} holds the catalog entry of backup {found!r}, not of {expected!r} "
                "(copied under another id)"
            )


def content_check(key: str, sysids: frozenset[int]) -> walpage.ContentCheck | CatalogIdCheck | None:
    cluster, kind, name = layout.object_identity(key)
    if kind == "catalog":
        return CatalogIdCheck(key)
    if kind != "wal":
        return None
    try:
        parse_wal_name(name)
    except UsageError:
        return None  # a kept-beside .partial variant (NAME.partial.<sha>): its envelope binds it
    return walpage.ContentCheck(name, key, sysids)
