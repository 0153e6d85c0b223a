"""The honest gate: in CI (CI=true) and under ./scripts/test.sh (OPSDB_TEST_GATE=1) a test whose tool or
privilege is missing FAILS instead of skipping, so a green run means every test ran. Elsewhere (a
developer's `pytest -k ...` on a machine without pgbouncer, say) it skips with the same reason."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

GATE = os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get("OPSDB_TEST_GATE") == "1"


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """Skip for `reason` (a missing tool, user or privilege), or fail the test when the gate is on."""
    if GATE:
        pytest.fail(f"the test gate needs this: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        missing(f"{what} needs root")
