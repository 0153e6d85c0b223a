"""Docs as code: the repository-format page names every layout key, README links resolve, CI runs the README's test command."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from opsdb.repo import layout

ROOT = Path(__file__).resolve().parents[2]


def test_repository_format_doc_names_every_layout_key():
    text = (ROOT / "docs" / "repository-format.md").read_text()
    names = [
        name
        for name, value in vars(layout).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or name.isupper())
        and getattr(value, "__module__", layout.__name__) == layout.__name__
    ]
    assert names, "layout.py exposes no keys?"
    missing = [name for name in names if name not in text]
    assert missing == [], f"docs/repository-format.md does not describe: {missing}"


def test_repository_format_doc_states_the_format_version():
    text = (ROOT / "docs" / "repository-format.md").read_text()
    assert f"version {layout.FORMAT_VERSION}" in text


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert missing == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(\./scripts/\S+)", quick_start, re.MULTILINE)
    assert len(commands) == 2, commands
    setup_and_demo, tests = commands
    assert "opsdb demo" in (ROOT / setup_and_demo).read_text()
    assert tests.lstrip("./") in (ROOT / ".ci" / "run").read_text()
