"""`opsdb demo` end to end: a passing PITR drill, the report left behind, nothing else."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_a_passing_drill_and_leaves_only_the_report(pg_bin_dir: Path, tmp_path: Path) -> None:
    before = {p.name for p in Path(tempfile.gettempdir()).glob("opsdb-demo-*")}
    out = subprocess.run(
        [sys.executable, "-m", "opsdb", "--json", "demo", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["result"] == "pass" and doc["rpo_seconds"] > 0
    assert {c["name"] for c in doc["checks"]} >= {"recovery point", "pg_amcheck", "target reached and promoted"}
    files = sorted(Path(f).suffix for f in doc["report_files"])
    assert files == [".html", ".json", ".md"]
    html = Path(next(f for f in doc["report_files"] if f.endswith(".html"))).read_text()
    assert "<svg" in html and not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "<script" not in html
    after = {p.name for p in Path(tempfile.gettempdir()).glob("opsdb-demo-*")}
    assert after == before  # the throwaway cluster, repository and key are gone
