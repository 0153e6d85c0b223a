"""What `opsdb verify` found: the result it returns and the problems it names (verify.py fills
them in, with verify_identity and verify_wal)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Problem:
    key: str
    what: str

    def to_dict(self) -> dict[str, str]:
        return {"object": self.key, "problem": self.what}


@dataclasses.dataclass
class VerifyResult:
    cluster: str
    scope: str  # "repository" or "backup <id>"
    objects: int = 0
    plain_bytes: int = 0
    stored_bytes: int = 0
    backups: int = 0
    wal_segments: int = 0
    manifest_files: int = 0
    timelines: list[int] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "scope": self.scope,
            "result": "pass" if self.ok else "fail",
            "objects": self.objects,
            "plain_bytes": self.plain_bytes,
            "stored_bytes": self.stored_bytes,
            "backups": self.backups,
            "wal_segments": self.wal_segments,
            "manifest_files": self.manifest_files,
            "timelines": self.timelines,
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """A catalog record's field, whether the record is a mapping or an object."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def strip_key(key: str, message: str) -> str:
    """IntegrityError messages start with 'object <key> ...': keep just the problem."""
    return message.removeprefix(f"object {key} ").strip()
