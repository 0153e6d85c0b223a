"""`opsdb demo` as the README's first command runs it (the console script, in a subprocess): a passing PITR
drill with WAL archived by PostgreSQL's archive_command through `opsdb wal-push`, the fallback when the
server's OS user cannot run opsdb, and cleanup after Ctrl-C / SIGTERM: only the report is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_pitr import _opsdb_for_server

pytestmark = pytest.mark.integration

CONSOLE_SCRIPT = Path(sys.executable).with_name("opsdb")  # what `.venv/bin/opsdb demo` runs
EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", re.I)


def _argv(*args: str) -> list[str]:
    base = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "opsdb"]
    return [*base, *args]


def _env(opsdb_executable: str) -> dict[str, str]:
    return dict(os.environ, OPSDB_EXECUTABLE=opsdb_executable)


def _workdir(stderr: str) -> Path:
    match = re.search(r"^demo: working in (\S+) ", stderr, re.M)
    assert match, stderr[-2000:]
    return Path(match.group(1))


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if text in args:
            found.append(f"{cmdline.parent.name}: {args}")
    return found


def _assert_nothing_left(stderr: str, pid: int) -> None:
    workdir = _workdir(stderr)
    assert workdir.name.startswith("opsdb-demo-")
    assert not workdir.exists(), f"{workdir} left behind"
    assert _processes_mentioning(str(workdir)) == [], "a server of the demo still runs"
    # the backup's own work dir (pg_basebackup's named pipes) is gone too
    assert list(Path(tempfile.gettempdir()).glob(f"opsdb-backup-{pid}-*")) == []


def _run_demo(
    report_dir: Path, opsdb_executable: str, bin_dir: Path | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    extra = ["--pg-bin-dir", str(bin_dir)] if bin_dir else []
    proc = subprocess.Popen(
        _argv("--json", "demo", "--report-dir", str(report_dir), *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(opsdb_executable),
        cwd="/tmp",
    )
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"opsdb demo did not finish in 300 s: {err[-2000:]}") from None
    return proc, out, err


def _check_report(doc: dict, report_dir: Path) -> None:
    assert doc["result"] == "pass" and doc["drill"]["result"] == "pass"
    assert doc["report_dir"] == str(report_dir)
    files = [Path(f) for f in doc["report_files"]]
    assert sorted(f.suffix for f in files) == [".html", ".json", ".md"]
    assert all(f.is_file() and f.parent == report_dir for f in files)
    assert sorted(p.name for p in report_dir.iterdir()) == sorted(f.name for f in files)  # only the report
    stored = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    assert stored["result"] == "pass" and stored["backup"]["id"] == doc["backup_id"]
    assert stored["id"] == doc["drill"]["id"]
    html = next(f for f in files if f.suffix == ".html").read_text()
    assert "<svg" in html and "<style" in html
    assert "<script" not in html.lower() and "@import" not in html and not EXTERNAL.search(html)
    # a point in the middle between heartbeats 3 and 4: recovered to heartbeat 3, a positive RPO below the gap
    drill = doc["drill"]
    checks = {c["name"]: c["status"] for c in drill["checks"]}
    assert {"recovery point", "pg_amcheck", "target reached and promoted", "WAL coverage"} <= set(checks)
    assert set(checks.values()) == {"pass"}
    assert drill["target_time"] == doc["target_time"] and 0 < drill["rpo_seconds"] < 5
    assert "row counts" in checks and "orders: 3,000" in next(
        c["detail"] for c in drill["checks"] if c["name"] == "row counts"
    )
    assert doc["backup"]["size_bytes"] > 1_000_000 and 0 < doc["backup"]["stored_bytes"] < doc["backup"]["size_bytes"]
    assert doc["wal"]["archived_files"] >= 7 and doc["wal"]["stored_bytes"] > 0
    assert set(doc["timings"]) == {"setup", "backup", "activity", "drill", "cleanup", "total"}


def test_demo_archives_through_wal_push_and_leaves_only_the_report(tmp_path: Path, pg_bin_dir: Path) -> None:
    exe = _opsdb_for_server()
    report_dir = tmp_path / "reports"
    proc, out, err = _run_demo(report_dir, exe, pg_bin_dir)  # once per PostgreSQL major
    assert proc.returncode == 0, err[-3000:]
    doc = json.loads(out)
    _check_report(doc, report_dir)
    assert doc["wal"]["mode"] == "archive_command" and doc["wal"]["executable"] == exe
    assert doc["wal"]["archive_command"].endswith(" wal-push %p") and "FALLBACK" not in err
    # the narrated tour is on stderr, with sizes and timings; the JSON alone is on stdout
    for line in (
        "demo: WAL archiving: PostgreSQL archives through `opsdb wal-push`",
        "demo: backup ",
        "MiB",
        "demo: drill PASS: RPO",
        "demo: report: ",
        "demo: cleanup: ",
        "demo: total ",
    ):
        assert line in err, line
    _assert_nothing_left(err, proc.pid)


def test_demo_falls_back_and_says_so_when_the_server_cannot_run_opsdb(tmp_path: Path) -> None:
    report_dir = tmp_path / "reports"
    proc, out, err = _run_demo(report_dir, str(tmp_path / "no-such-opsdb"))
    assert proc.returncode == 0, err[-3000:]
    doc = json.loads(out)
    _check_report(doc, report_dir)
    assert doc["wal"]["mode"] == "fallback" and "no-such-opsdb" in doc["wal"]["note"]
    assert len([ln for ln in err.splitlines() if "FALLBACK" in ln]) == 1  # one honest line
    _assert_nothing_left(err, proc.pid)


# restore_command through this wrapper holds the first WAL segment fetch until the test lets it go (or its
# parent, the scratch server's startup process, is gone): Ctrl-C then lands during replay on any machine load
_HOLDING_WRAPPER = """#!/bin/sh
for arg in "$@"; do last2=$last1; last1=$arg; done
if [ "$5" = wal-fetch ] || [ "$3" = wal-fetch ]; then
  case "$last2" in
    *.history|*.partial|*.backup) ;;
    *) touch {flags}/fetching
       i=0
       while [ ! -e {flags}/release ] && [ $i -lt 600 ] && kill -0 $PPID 2>/dev/null; do sleep 0.1; i=$((i+1)); done
       kill -0 $PPID 2>/dev/null || exit 1 ;;
  esac
fi
exec {real} "$@"
"""


@contextlib.contextmanager
def _holding_opsdb(real: str) -> Iterator[tuple[str, Path]]:
    """An opsdb executable the server's OS user can run that holds replay; the flags dir it signals in."""
    where = Path(tempfile.mkdtemp(prefix="opsdb-demo-hold-"))
    try:
        flags = where / "flags"
        flags.mkdir()
        where.chmod(0o755)
        flags.chmod(0o777)
        wrapper = where / "opsdb"
        wrapper.write_text(_HOLDING_WRAPPER.format(flags=flags, real=real))
        wrapper.chmod(0o755)
        yield str(wrapper), flags
    finally:
        (where / "flags" / "release").touch()
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.parametrize(
    ("signum", "when"),
    [(signal.SIGINT, "replay held"), (signal.SIGTERM, "demo: backup ")],
    ids=["ctrl-c-during-replay", "sigterm-after-backup"],
)
def test_interrupted_demo_cleans_up(tmp_path: Path, signum: int, when: str) -> None:
    """Ctrl-C reaches the whole foreground process group, as from a terminal. During replay is made
    certain, not likely: the scratch server's first WAL fetch waits until the signal was sent."""
    with _holding_opsdb(_opsdb_for_server()) as (exe, flags):
        proc = subprocess.Popen(
            _argv("demo", "--report-dir", str(tmp_path / "reports")),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(exe),
            cwd="/tmp",
            start_new_session=True,
        )
        assert proc.stderr is not None
        seen = ""
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stderr, selectors.EVENT_READ)
                deadline = time.monotonic() + 180
                held = (flags / "fetching").exists
                while not (held() if when == "replay held" else when in seen):
                    assert time.monotonic() < deadline and proc.poll() is None, seen[-2000:]
                    if sel.select(timeout=0.2):
                        seen += proc.stderr.readline()
            os.killpg(proc.pid, signum)
            rest = proc.communicate(timeout=120)[1]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 130, seen + rest
    assert "interrupted" in rest and "demo: cleanup: " in rest
    if when == "replay held":
        assert "drill: phase replay" in seen + rest
    _assert_nothing_left(seen + rest, proc.pid)
