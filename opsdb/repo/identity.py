"""Where a stored object belongs: its identity, which envelope version 3 binds it to.

The identity is derived from the object's key (layout.object_identity: cluster, kind, logical name)
plus the cluster's system identifier; the envelope header names it and the trailer carries its
SHA-256 (repo/envelope_format.py). A reader derives the identity it expects from the key it reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection
from typing import Any

from opsdb.repo.layout import object_identity


@dataclasses.dataclass(frozen=True)
class ObjectIdentity:
    """Where an object belongs. `system_identifier` is None when the writer did not know it (a
    history file pushed before the cluster had a marker) or the reader does not check it."""

    cluster: str
    system_identifier: str | None
    kind: str  # wal, backup, catalog, report (layout.object_identity)
    name: str

    @classmethod
    def of_key(cls, key: str, system_identifier: int | str | None = None) -> ObjectIdentity:
        cluster, kind, name = object_identity(key)
        return cls(cluster, None if system_identifier is None else str(system_identifier), kind, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "system_identifier": self.system_identifier,
            "kind": self.kind,
            "name": self.name,
        }

    def digest(self) -> bytes:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(b"opsdb object identity v1\0" + text).digest()

    def describe(self, system_identifiers: Collection[str] = ()) -> str:
        sysids = [self.system_identifier] if self.system_identifier else sorted(system_identifiers)
        owner = f" (system identifier {' or '.join(sysids)})" if sysids else ""
        return f"{self.kind} {self.name} of cluster {self.cluster!r}{owner}"

    def belongs(self, expected: ObjectIdentity, system_identifiers: Collection[str] = ()) -> bool:
        if (self.cluster, self.kind, self.name) != (expected.cluster, expected.kind, expected.name):
            return False
        return not system_identifiers or self.system_identifier is None or self.system_identifier in system_identifiers
