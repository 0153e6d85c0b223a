"""Command groups. Each module has register(app) and keeps each command to parse -> one ops call -> output."""

from __future__ import annotations

from opsdb.errors import NotImplementedYet


def not_built(command: str) -> NotImplementedYet:
    """An unfinished command says so and exits 1 (nothing may pretend to work)."""
    return NotImplementedYet(f"`opsdb {command}` is not implemented in this version yet")
