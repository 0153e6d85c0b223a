"""Check results in the monitoring-plugin convention (Nagios/Icinga): OK 0, WARNING 1, CRITICAL 2, UNKNOWN 3.

A report's status is its worst check. "Worst" ranks CRITICAL above UNKNOWN above WARNING above OK
(as check_multi and most plugin aggregators do): a failed server check plus the checks it made
impossible (UNKNOWN) must still page as CRITICAL, not exit 3.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import Any


class Status(enum.Enum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"

    @property
    def exit_code(self) -> int:
        return _EXIT[self]

    @property
    def severity(self) -> int:
        """Rank used to pick the worst status: OK < WARNING < UNKNOWN < CRITICAL."""
        return _SEVERITY[self]

    def __str__(self) -> str:
        return self.value


_EXIT = {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2, Status.UNKNOWN: 3}
_SEVERITY = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status; OK for none."""
    return max(statuses, key=lambda s: s.severity, default=Status.OK)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail}


@dataclasses.dataclass
class CheckReport:
    """An ordered list of checks; its status is the worst of them."""

    checks: list[CheckResult] = dataclasses.field(default_factory=list)

    def add(self, name: str, status: Status, detail: str) -> CheckResult:
        result = CheckResult(name, status, detail)
        self.checks.append(result)
        return result

    @property
    def status(self) -> Status:
        return worst(c.status for c in self.checks)

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def get(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "checks": [c.to_dict() for c in self.checks]}
