"""Shared fixtures: real PostgreSQL clusters (tests/fixtures/pg.py) and a real S3 endpoint (tests/fixtures/s3.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gate import missing

pytest_plugins = ["tests.fixtures.pg", "tests.fixtures.s3"]

_HELPER_COMMANDS = (b"wal-helper",)


def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("root")
    if mark is not None and os.geteuid() != 0:
        missing(mark.args[0] if mark.args else "needs root")


def _started_ticks(pid: str) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time, clock ticks after boot


@pytest.fixture(scope="session", autouse=True)
def stop_wal_helpers_started_by_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """archive_command / restore_command in the tests start WAL helpers that
    would otherwise idle on for a minute after the session: stop those this session (this xdist worker)
    started with a config under its temp dirs (pytest's, and tests.fixtures.pg.make_temp_dir's)."""
    first = _started_ticks(str(os.getpid()))
    from tests.fixtures.pg import TEMP_DIRS

    base = os.fsencode(tmp_path_factory.getbasetemp())
    yield
    ours_prefixes = (base, *(os.fsencode(d) for d in TEMP_DIRS))
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ours = any(a.startswith(ours_prefixes) for a in argv)
            if ours and b"opsdb.cli.fastpath" in argv and any(c in argv for c in _HELPER_COMMANDS):
                if _started_ticks(entry.name) >= first:
                    os.kill(int(entry.name), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            continue
