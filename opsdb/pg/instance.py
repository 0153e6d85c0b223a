"""A local PostgreSQL data directory as an object: initdb, configure, start, stop, promote.

Every external command runs through the injected Runner, as `os_user` when opsdb runs as root
(PostgreSQL refuses to run as root). Files opsdb writes into the data directory are chowned to
`os_user`. The server listens on 127.0.0.1 only, on the given port; Unix sockets go to `socket_dir`,
or are off when it is None. Every wait is bounded.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from opsdb.errors import DatabaseError, OperationFailed, ToolError, UsageError
from opsdb.pg.autoconf import set_settings
from opsdb.pg.conninfo import make_conninfo
from opsdb.pg.tools import PgTools
from opsdb.proc import Cmd, Completed, Runner

# The name of the WAL segment this closes. A tiny logical message first so there is always something to
# switch: with nothing written since the last switch, PostgreSQL 15 returns the boundary (the name is the
# segment closed before) but 17+ return the insert position inside the new, still open segment.
CLOSE_SEGMENT_SQL = (
    "SELECT pg_walfile_name(pg_switch_wal()) FROM (SELECT pg_logical_emit_message(false, 'opsdb', 'switch')) AS m"
)


def _running_as_root() -> bool:
    return os.geteuid() == 0


class Instance:
    """One data directory served on one port."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        bin_dir: Path,
        os_user: str | None,
        runner: Runner,
        socket_dir: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = int(port)
        self.tools = PgTools(bin_dir)
        self.os_user = os_user
        self.runner = runner
        self.socket_dir = socket_dir
        # beside the data directory, so it survives (and is not copied with) the data directory
        self.log_path = Path(log_path) if log_path else self.data_dir.with_name(self.data_dir.name + ".log")

    def __repr__(self) -> str:
        return f"Instance({str(self.data_dir)!r}, port={self.port})"

    # --- helpers -------------------------------------------------------------------------------------

    @property
    def run_as(self) -> str | None:
        return self.os_user if _running_as_root() else None

    def _chown(self, path: Path) -> None:
        if self.run_as is None:
            return
        try:
            entry = pwd.getpwnam(self.run_as)
        except KeyError:
            raise UsageError(f"os_user {self.run_as!r} does not exist on this machine") from None
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, cmd: Cmd, doing: str, *, check: bool = True) -> Completed:
        return self.runner.run(cmd, check=check, doing=doing)

    # --- lifecycle -----------------------------------------------------------------------------------

    def initdb(self, extra_args: Sequence[str] = (), *, superuser: str = "postgres", auth: str = "trust") -> None:
        """Create the data directory (0700, owned by os_user) and run initdb in it (with data checksums)."""
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise UsageError(f"unable to initdb {self.data_dir}: directory is not empty")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        self._chown(self.data_dir)
        cmd = self.tools.initdb(
            str(self.data_dir), superuser=superuser, auth=auth, extra=extra_args, run_as=self.run_as
        )
        self._run(cmd, f"initializing {self.data_dir}")

    def configure(self, settings: Mapping[str, object]) -> None:
        """Set parameters in postgresql.auto.conf (replacing earlier values of the same names).

        Takes effect at the next start (or reload for reloadable settings)."""
        set_settings(self.data_dir, settings, os_user=self.run_as)

    def start_options(self) -> list[str]:
        options = ["-p", str(self.port), "-c", "listen_addresses=127.0.0.1"]
        sockets = str(self.socket_dir) if self.socket_dir else ""
        options += ["-c", f"unix_socket_directories={sockets}"]
        return options

    def start(self, timeout: float = 60) -> None:
        """pg_ctl start -w; then wait until it accepts connections. ToolError carries the log's tail."""
        cmd = self._start_cmd(timeout, wait=True)
        try:
            self._run(cmd, f"starting PostgreSQL in {self.data_dir} on port {self.port}")
        except ToolError as exc:
            # pg_ctl only says "could not start server": the reason is in the server log
            raise ToolError(
                exc.argv0, exc.returncode, self.log_tail(), doing=f"starting PostgreSQL on port {self.port}"
            ) from exc
        self.wait_ready(timeout)

    def launch(self) -> None:
        """pg_ctl start without waiting: the caller watches the server (its process and its log), so a
        server that cannot be logged into, or that stops, never blocks it."""
        self._run(self._start_cmd(60, wait=False), f"starting PostgreSQL in {self.data_dir} on port {self.port}")

    def _start_cmd(self, timeout: float, *, wait: bool) -> Cmd:
        if self.socket_dir is not None:
            self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._chown(self.socket_dir)
        if not self.log_path.exists():
            self.log_path.touch(mode=0o600)
            self._chown(self.log_path)
        return self.tools.pg_ctl_start(
            str(self.data_dir),
            log_path=str(self.log_path),
            options=self.start_options(),
            wait_seconds=max(1, int(timeout)),
            run_as=self.run_as,
            wait=wait,
        )

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int, max_bytes: int = 1024 * 1024) -> str:
        """The server log written after offset (its last max_bytes)."""
        try:
            with open(self.log_path, "rb") as fh:
                end = fh.seek(0, os.SEEK_END)
                fh.seek(max(offset, end - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server if it runs (idempotent); falls back to immediate if a clean stop fails."""
        if not self.is_running():
            return
        cmd = self.tools.pg_ctl_stop(
            str(self.data_dir), mode=mode, wait_seconds=max(1, int(timeout)), run_as=self.run_as
        )
        try:
            self._run(cmd, f"stopping PostgreSQL in {self.data_dir}")
        except ToolError:
            if mode == "immediate" or not self.is_running():
                raise
            fallback = self.tools.pg_ctl_stop(str(self.data_dir), mode="immediate", wait_seconds=30, run_as=self.run_as)
            self._run(fallback, f"stopping PostgreSQL in {self.data_dir} (immediate)")

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = self._run(
            self.tools.pg_ctl_status(str(self.data_dir), run_as=self.run_as), "checking status", check=False
        )
        return result.returncode == 0

    def wait_ready(self, timeout: float = 60) -> None:
        """Poll until a connection succeeds and answers; OperationFailed after `timeout` seconds."""
        from opsdb.pg import conn  # psycopg costs ~8 MB RSS: only commands that connect load it

        deadline = time.monotonic() + timeout
        last = "not tried"
        while True:
            try:
                with conn.connect(self.conninfo(), timeout=min(5, max(1, timeout))) as c:
                    c.fetchval("SELECT 1")
                    return
            except DatabaseError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise OperationFailed(f"PostgreSQL on port {self.port} not ready after {timeout:g} s: {last}")
            time.sleep(0.2)

    def promote(self, timeout: float = 60) -> None:
        cmd = self.tools.pg_ctl_promote(str(self.data_dir), wait_seconds=max(1, int(timeout)), run_as=self.run_as)
        self._run(cmd, f"promoting {self.data_dir}")

    # --- facts ---------------------------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return make_conninfo({"host": "127.0.0.1", "port": str(self.port), "user": user, "dbname": dbname})

    def controldata(self) -> dict[str, str]:
        """pg_controldata as {label: value}, e.g. "Database cluster state": "in production"."""
        result = self._run(self.tools.pg_controldata(str(self.data_dir), run_as=self.run_as), "reading pg_controldata")
        return parse_controldata(result.stdout.decode("utf-8", "replace"))

    def log_tail(self, max_bytes: int = 4096) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""


def parse_controldata(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out
