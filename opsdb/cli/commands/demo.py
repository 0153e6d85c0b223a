"""opsdb demo."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from opsdb.cli import output
from opsdb.cli.state import AppState
from opsdb.errors import OperationFailed


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job cancelled, `kill`) unwinds like Ctrl-C, so the demo's cleanup runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_report_dir() -> Path:
    """The demo's report goes under the state directory, never into the working directory (a checkout)."""
    if os.geteuid() == 0:
        candidates = [Path("/var/lib/opsdb/demo")]
    else:
        state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        candidates = [Path(state_home) / "opsdb" / "demo"]
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    return Path(tempfile.mkdtemp(prefix="opsdb-demo-report-"))


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        report_dir: Annotated[
            str | None,
            typer.Option(
                "--report-dir",
                metavar="DIR",
                help="Where the drill report is kept (default: /var/lib/opsdb/demo as root, else "
                "$XDG_STATE_HOME/opsdb/demo; a temp dir when neither can be made).",
            ),
        ] = None,
        os_user: Annotated[
            str, typer.Option("--os-user", help="Runs PostgreSQL when opsdb runs as root.")
        ] = "postgres",
        pg_bin_dir: Annotated[
            str | None, typer.Option("--pg-bin-dir", help="PostgreSQL bin directory (default: found as for backups).")
        ] = None,
    ) -> None:
        """Run a throwaway backup, PITR drill and report.

        A throwaway cluster and local repository: backup, WAL archiving, PITR drill, report.
        """
        from opsdb.ops.proof.demo import run_demo, summary

        state: AppState = ctx.obj
        try:
            with _sigterm_as_interrupt():
                where = Path(report_dir).resolve() if report_dir else default_report_dir()
                result = run_demo(
                    where, os_user=os_user, log=output.info, bin_dir=Path(pg_bin_dir) if pg_bin_dir else None
                )
        except KeyboardInterrupt:
            output.error_text("interrupted (the demo's servers and temp dir were removed)")
            raise  # Typer turns it into exit 130
        html = next((f for f in result.report_files if f.endswith(".html")), "")
        verdict = "PASS" if result.passed else "FAIL"
        output.emit(state, summary(result), f"demo drill {verdict}: open {html}")
        if not result.passed:
            raise OperationFailed(f"demo drill failed: {', '.join(c.name for c in result.report.failed_checks)}")
