#!/usr/bin/env python3
"""Line coverage per opsdb package against the floors in scripts/coverage_floors.json.

./scripts/test.sh measures coverage (pytest-cov, in-process code only) into .coverage and runs this
after a whole-suite run. It fails when a package is below its floor, or is not in the file.
`--raise` writes floors up to what was measured, rounded down to a whole percent (runs differ by a few
tenths: retries, timeouts, which worker ran what), and never lowers one: a floor only moves up, in the
commit that earned it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ROOT / "scripts" / "coverage_floors.json"


def package_of(path: Path) -> str:
    """opsdb/ops/backup/physical.py -> "opsdb.ops"; opsdb/config.py (a top-level module) -> "opsdb"."""
    parts = path.resolve().relative_to(ROOT).parts
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def measure(data_file: Path) -> dict[str, float]:
    """Package -> percent of its statements run."""
    cov = coverage.Coverage(data_file=str(data_file), config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    statements: dict[str, int] = defaultdict(int)
    missed: dict[str, int] = defaultdict(int)
    for source in sorted((ROOT / "opsdb").rglob("*.py")):
        _, stmts, _, missing, _ = cov.analysis2(str(source))
        statements[package_of(source)] += len(stmts)
        missed[package_of(source)] += len(missing)
    return {pkg: 100.0 * (n - missed[pkg]) / n for pkg, n in sorted(statements.items()) if n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-file", type=Path, default=ROOT / ".coverage")
    parser.add_argument("--floors", type=Path, default=FLOORS, help="the floors file (JSON: package -> percent)")
    parser.add_argument("--raise", dest="raise_floors", action="store_true", help="raise floors to what was measured")
    args = parser.parse_args(argv)
    measured = measure(args.data_file)
    floors: dict[str, float] = json.loads(args.floors.read_text()) if args.floors.exists() else {}
    failed = []
    for pkg, percent in measured.items():
        floor = floors.get(pkg)
        mark = "" if floor is None or percent >= floor else "  BELOW FLOOR"
        print(f"{pkg:<18} {percent:5.1f} %  (floor {'none' if floor is None else f'{floor:.1f} %'}){mark}")
        if floor is None or percent < floor:
            failed.append(pkg)
    if args.raise_floors:
        raised = {pkg: max(floors.get(pkg, 0.0), float(math.floor(percent))) for pkg, percent in measured.items()}
        args.floors.write_text(json.dumps(raised, indent=2, sort_keys=True) + "\n")
        print(f"floors written to {args.floors}")
        return 0
    if failed:
        print(f"coverage: below its floor or without one: {', '.join(failed)} ({args.floors})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
