"""scripts/coverage_floors.py: per-package line coverage against floors that only move up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "coverage_floors.py"
MODEL = ROOT / "opsdb" / "model" / "lsn.py"


def _data(tmp_path: Path, covered: bool) -> Path:
    """A coverage data file in which opsdb/model/lsn.py ran every statement (or none), nothing else ran."""
    path = tmp_path / ".coverage"
    data = coverage.CoverageData(basename=str(path))
    if covered:
        cov = coverage.Coverage(data_file=None, config_file=str(ROOT / "pyproject.toml"))
        _, statements, _, _, _ = cov.analysis2(str(MODEL))
        data.add_lines({str(MODEL): statements})
    else:
        data.add_lines({str(MODEL): []})
    data.write()
    return path


def _run(tmp_path: Path, data: Path, floors: dict[str, float], *extra: str) -> tuple[int, str, dict[str, float]]:
    floors_file = tmp_path / "floors.json"
    floors_file.write_text(json.dumps(floors))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-file", str(data), "--floors", str(floors_file), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    return done.returncode, done.stdout, json.loads(floors_file.read_text())


def _all_zero() -> dict[str, float]:
    packages = {p.name for p in (ROOT / "opsdb").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return {"opsdb": 0.0, **{f"opsdb.{name}": 0.0 for name in packages}}


def test_a_package_below_its_floor_fails_the_run(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, _data(tmp_path, covered=False), {**_all_zero(), "opsdb.model": 1.0})
    assert code == 1
    assert "opsdb.model" in out.splitlines()[-1] and "BELOW FLOOR" in out


def test_a_package_without_a_floor_fails_the_run(tmp_path: Path) -> None:
    floors = _all_zero()
    del floors["opsdb.stream"]
    code, out, _ = _run(tmp_path, _data(tmp_path, covered=True), floors)
    assert code == 1 and out.splitlines()[-1].startswith("coverage: below its floor or without one: opsdb.stream")


def test_at_or_above_every_floor_passes(tmp_path: Path) -> None:
    code, _, _ = _run(tmp_path, _data(tmp_path, covered=True), {**_all_zero(), "opsdb.model": 1.0})
    assert code == 0


def test_raise_moves_floors_up_to_the_whole_percent_measured_and_never_down(tmp_path: Path) -> None:
    floors = {**_all_zero(), "opsdb.stream": 93.0}  # nothing of stream ran in this data: 0 % measured
    code, _, raised = _run(tmp_path, _data(tmp_path, covered=True), floors, "--raise")
    assert code == 0
    assert raised["opsdb.stream"] == 93.0  # not lowered
    assert 0.0 < raised["opsdb.model"] == int(raised["opsdb.model"])  # raised, rounded down to a whole percent
