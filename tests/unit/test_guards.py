"""Project guards: module size budget, and the subprocess/third-party import rules that ruff cannot see."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "opsdb"
MAX_LINES = 600


def test_no_module_over_600_lines():
    too_big = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_big == {}, f"modules over {MAX_LINES} lines (split them by job): {too_big}"


def test_subprocess_only_in_proc():
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if path.name != "proc.py" and ("import subprocess" in path.read_text() or "from subprocess" in path.read_text())
    ]
    assert offenders == []
