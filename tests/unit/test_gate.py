"""tests/gate.py: a missing tool skips a developer's run but fails CI's and ./scripts/test.sh's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEEDS_A_TOOL = """
from tests.gate import missing

def test_needs_a_tool():
    missing("no frobnicator here")
"""


def _outcome(tmp_path: Path, **env: str) -> str:
    test = tmp_path / "test_needs_a_tool.py"
    test.write_text(NEEDS_A_TOOL)
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "OPSDB_TEST_GATE")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", "--no-cov", str(test)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **env},
    )
    return done.stdout


@pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"OPSDB_TEST_GATE": "0"}])
def test_outside_the_gate_a_missing_tool_skips(tmp_path: Path, env: dict[str, str]) -> None:
    out = _outcome(tmp_path, **env)
    assert "1 skipped" in out and "no frobnicator here" in out, out


@pytest.mark.parametrize("env", [{"CI": "true"}, {"OPSDB_TEST_GATE": "1"}])
def test_under_the_gate_a_missing_tool_fails_the_run(tmp_path: Path, env: dict[str, str]) -> None:
    out = _outcome(tmp_path, **env)
    assert "1 failed" in out and "the test gate needs this: no frobnicator here" in out, out
