"""How the demo cluster archives its WAL.

The real path: PostgreSQL's archive_command runs `opsdb --config C --cluster demo wal-push %p` as the
server's OS user, exactly as docs/wal.md tells an operator to configure it. That needs an opsdb the
OS user can execute (`ops.recovery.pitr.opsdb_executable()`: $OPSDB_EXECUTABLE, else the one beside this
interpreter, else PATH). A venv whose interpreter lives under a 0700 home (/root/.pyenv) cannot be run
by `postgres`; then the demo falls back, and says so: archive_command copies each finished file
into a staging directory (atomically: copy to a dot-name, then rename), and the demo stores it with
`ops.wal.push_fetch.push_file`, the same function `opsdb wal-push` runs.

Either way `switch_and_wait` closes the current segment and waits until pg_stat_archiver reports
it archived (and, in the fallback, stored); an archive failure is reported at once with the
server's own log lines, not after a timeout.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsdb.errors import OperationFailed, OpsdbError
from opsdb.ops.recovery.pitr import opsdb_executable
from opsdb.pg.conn import connect
from opsdb.pg.instance import CLOSE_SEGMENT_SQL
from opsdb.proc import Cmd, Runner

ARCHIVE_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class ArchiveMode:
    """What archive_command does, and why."""

    real: bool  # True: PostgreSQL runs opsdb wal-push; False: cp to staging, the demo pushes
    archive_command: str
    executable: str  # the opsdb probed for the server's OS user
    note: str  # one line for the tour and the JSON: what runs, or why the fallback
    staging: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "archive_command" if self.real else "fallback",
            "archive_command": self.archive_command,
            "executable": self.executable,
            "note": self.note,
        }


def choose_mode(config: Path, cluster: str, os_user: str | None, staging: Path, runner: Runner) -> ArchiveMode:
    """Probe whether os_user (None: this user) can run opsdb; pick the real path or the fallback."""
    exe = opsdb_executable()
    reason = _probe(exe, os_user, config.parent, runner)
    who = os_user or "this user"
    if reason is None:
        command = " ".join(shlex.quote(p) for p in (exe, "--config", str(config), "--cluster", cluster))
        command += " wal-push %p"
        return ArchiveMode(True, command, exe, f"PostgreSQL archives through `opsdb wal-push` ({exe}, run as {who})")
    part, final = shlex.quote(str(staging / ".%f.part")), shlex.quote(str(staging / "%f"))
    return ArchiveMode(
        False,
        f"cp %p {part} && mv {part} {final}",
        exe,
        f"FALLBACK: {who} cannot run {exe} ({reason}); archive_command copies WAL to a staging dir and the demo "
        "stores it with the code wal-push runs (set OPSDB_EXECUTABLE to an opsdb it can run, or rebuild the "
        "venv with scripts/bootstrap.sh)",
        staging,
    )


def _probe(exe: str, os_user: str | None, cwd: Path, runner: Runner) -> str | None:
    """None when `exe --version` works as os_user, else the reason in a few words."""
    try:
        done = runner.run(Cmd((exe, "--version"), run_as=os_user, timeout=60, cwd=str(cwd)), check=False)
    except OpsdbError as exc:
        return exc.message.splitlines()[0] if exc.message else "not executable"
    if done.returncode == 0:
        return None
    text = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
    return (text[-1] if text else f"exit {done.returncode}")[:200]


class Archiver:
    """Switches WAL on the demo server and waits until the segment is in the repository."""

    def __init__(self, mode: ArchiveMode, conninfo: str, server_log: Path, push: Callable[[str], Any]) -> None:
        self.mode = mode
        self.conninfo = conninfo
        self.server_log = server_log
        self.push = push  # fallback only: store one staged file (ops.wal.push_fetch.push_file)
        self.pushed: set[str] = set()

    def switch_and_wait(self) -> str:
        """Close the current WAL segment; return its name once it is archived (and stored)."""
        with connect(self.conninfo) as conn:
            failures = int(conn.fetchval("SELECT failed_count FROM pg_stat_archiver"))
            name = str(conn.fetchval(CLOSE_SEGMENT_SQL))
            deadline = time.monotonic() + ARCHIVE_WAIT_SECONDS
            while True:  # bounded by the deadline
                row = conn.fetchone(
                    "SELECT coalesce(last_archived_wal >= %s, false) AS done, failed_count, last_failed_wal "
                    "FROM pg_stat_archiver",
                    (name,),
                )
                assert row is not None
                if row["done"]:
                    break
                if int(row["failed_count"]) > failures:
                    raise OperationFailed(
                        f"the demo server could not archive {row['last_failed_wal']}: {self._log_lines()}"
                    )
                if time.monotonic() > deadline:
                    raise OperationFailed(f"the demo server did not archive {name} within {ARCHIVE_WAIT_SECONDS:g} s")
                time.sleep(POLL_SECONDS)
        if not self.mode.real:
            self._push_staged()
        return name

    def _push_staged(self) -> None:
        assert self.mode.staging is not None
        # complete files only: archive_command renames a file into place after copying it
        for path in sorted(p for p in self.mode.staging.iterdir() if not p.name.startswith(".")):
            if path.name not in self.pushed:
                self.push(str(path))
                self.pushed.add(path.name)

    def archived_count(self) -> int:
        with connect(self.conninfo) as conn:
            return int(conn.fetchval("SELECT archived_count FROM pg_stat_archiver"))

    def _log_lines(self) -> str:
        """The server's lines about archiving (what wal-push printed, and PostgreSQL's complaint)."""
        try:
            text = self.server_log.read_text(errors="replace")[-20000:]
        except OSError:
            return "see the server log"
        lines = [ln.strip() for ln in text.splitlines() if "archiv" in ln or "opsdb" in ln]
        return " | ".join(lines[-3:]) or "see the server log"


__all__ = ["ArchiveMode", "Archiver", "choose_mode"]
