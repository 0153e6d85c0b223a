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


def test_every_type_ignore_names_its_error_and_says_why():
    """`# type: ignore[code]  # why`: mypy (in ./scripts/test.sh) checks the code is still needed."""
    import re

    bare = [
        f"{path.relative_to(PACKAGE.parent)}:{n}"
        for path in PACKAGE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "type: ignore" in line and not re.search(r"# type: ignore\[[a-z-, ]+\]  # \S", line)
    ]
    assert bare == [], f"type: ignore without an error code and a reason: {bare}"
