"""opsdb demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsdb.cli import output
from opsdb.cli.state import AppState
from opsdb.errors import OperationFailed


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        report_dir: Annotated[
            str, typer.Option("--report-dir", help="Where the drill report is written.")
        ] = "opsdb-demo-reports",
        os_user: Annotated[
            str, typer.Option("--os-user", help="Runs PostgreSQL when opsdb runs as root.")
        ] = "postgres",
    ) -> None:
        """Throwaway cluster + local repository: backup, WAL, PITR drill, report."""
        from opsdb.ops.demo import run_demo, summary

        state: AppState = ctx.obj
        result = run_demo(Path(report_dir).resolve(), os_user=os_user, log=output.info)
        html = next((f for f in result.report_files if f.endswith(".html")), "")
        verdict = "PASS" if result.report.passed else "FAIL"
        output.emit(state, summary(result), f"demo drill {verdict}: open {html}")
        if not result.report.passed:
            raise OperationFailed(f"demo drill failed: {', '.join(c.name for c in result.report.failed_checks)}")
