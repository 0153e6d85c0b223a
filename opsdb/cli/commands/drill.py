"""opsdb verify, opsdb heartbeat, opsdb drill, opsdb report list|show."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli import output
from opsdb.cli.commands import not_built
from opsdb.cli.state import AppState
from opsdb.model.report import format_time


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        ctx: typer.Context,
        backup_id: Annotated[
            str | None, typer.Option("--backup", help="Verify one backup and the WAL it needs.")
        ] = None,
    ) -> None:
        """Re-read stored objects: checksums, authentication tags, WAL continuity."""
        raise not_built("verify")

    @app.command("heartbeat")
    def heartbeat(ctx: typer.Context) -> None:
        """Insert a heartbeat row (time, LSN, txid) on the primary."""
        from opsdb.ops.heartbeat import record_heartbeat

        state: AppState = ctx.obj
        name, cluster = state.cluster()
        beat = record_heartbeat(cluster.conninfo, cluster.heartbeat_schema)
        data = {"cluster": name, "time": format_time(beat.time), "lsn": beat.lsn, "txid": beat.txid}
        output.emit(state, data, f"heartbeat {beat.id} at {data['time']} lsn {beat.lsn} txid {beat.txid}")

    @app.command("drill")
    def drill(
        ctx: typer.Context,
        to_time: Annotated[str | None, typer.Option("--to-time", help="Target time with offset or Z.")] = None,
        random_target: Annotated[
            bool, typer.Option("--random", help="A random point in the recoverable window.")
        ] = False,
        provider: Annotated[str | None, typer.Option("--provider", help="local or docker.")] = None,
        report_dir: Annotated[
            str | None, typer.Option("--report-dir", help="Also write the report files here.")
        ] = None,
        keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch instance.")] = False,
    ) -> None:
        """Restore into a scratch instance, prove it, and report RTO/RPO."""
        raise not_built("drill")

    report = typer.Typer(help="Drill reports kept in the repository.", no_args_is_help=True)

    @report.command("list")
    def report_list(ctx: typer.Context) -> None:
        """List drill reports with their RTO/RPO history."""
        raise not_built("report list")

    @report.command("show")
    def report_show(
        ctx: typer.Context,
        report_id: Annotated[str, typer.Argument(metavar="ID")],
        fmt: Annotated[str, typer.Option("--format", help="json, md or html.")] = "md",
    ) -> None:
        """Print one report."""
        raise not_built("report show")

    app.add_typer(report, name="report")
