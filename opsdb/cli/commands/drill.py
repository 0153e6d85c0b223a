"""opsdb verify, opsdb heartbeat, opsdb drill, opsdb report list|show."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from opsdb.cli import output
from opsdb.cli.state import AppState
from opsdb.errors import OperationFailed
from opsdb.model.report import format_time


def _verify_text(result: Any, bytes_per_second: float) -> str:
    from opsdb.model.units import human_bytes

    # the progress meter's own rate: stored bytes read since reading began (the bar showed the same)
    rate = human_bytes(bytes_per_second) + "/s" if bytes_per_second > 0 else "-"
    head = (
        f"verify {result.scope} of cluster {result.cluster}: {result.objects} objects, "
        f"{human_bytes(result.plain_bytes)} ({human_bytes(result.stored_bytes)} stored), {result.backups} backups, "
        f"{result.wal_segments} WAL segments, {result.manifest_files} manifest files, "
        f"timelines {result.timelines or '-'} in {result.seconds:.1f} s, {rate}"
    )
    lines = [head]
    lines += [f"BAD {p.key}: {p.what}" for p in result.problems]
    lines += [f"note: {n}" for n in result.notes]
    lines.append(
        "FAIL" if result.problems else "OK: every object authenticated and matches the catalog; WAL continuous"
    )
    return "\n".join(lines)


def _drill_text(report: Any, files: list[str]) -> str:
    from opsdb.render.report import duration

    lines = [f"drill {report.id}: {'PASS' if report.passed else 'FAIL'}"]
    lines.append(f"  target     {format_time(report.target_time)} ({report.target_kind})")
    lines.append(f"  reached    {format_time(report.recovered_time) or 'n/a'}")
    lines.append(f"  RPO        {duration(report.rpo_seconds)}")
    lines.append(
        f"  RTO        {duration(report.rto_seconds)}  ({', '.join(f'{k} {v:.1f} s' for k, v in report.phases.items())})"
    )
    for c in report.checks:
        lines.append(f"  {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}")
    lines += [f"  report     {f}" for f in files]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        ctx: typer.Context,
        backup_id: Annotated[
            str | None, typer.Option("--backup", help="Verify one backup and the WAL it needs.")
        ] = None,
    ) -> None:
        """Re-read stored objects and check WAL continuity.

        Checksums, authentication tags, the catalog and WAL continuity.
        """
        from opsdb.ops.proof.drill_run import verify_from_settings

        state: AppState = ctx.obj
        name, _ = state.cluster()
        with output.progress(f"verify {name}") as on_bytes:
            result = verify_from_settings(state.settings, name, backup_id, on_bytes=on_bytes)
        output.emit(state, result.to_dict(), _verify_text(result, on_bytes.rate()))
        if not result.ok:
            raise OperationFailed(f"verify found {len(result.problems)} bad object(s) in {result.scope}")

    @app.command("heartbeat")
    def heartbeat(ctx: typer.Context) -> None:
        """Write a heartbeat row (time, LSN, txid) on the primary."""
        from opsdb.ops.proof.heartbeat import record_heartbeat

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
        """Restore into a scratch instance and report RTO/RPO.

        Restores, checks the data and writes a recovery report with measured RTO and RPO.
        """
        from opsdb.model.target import parse_time
        from opsdb.ops.proof.drill_run import drill_from_settings

        state: AppState = ctx.obj
        name, _ = state.cluster()
        when = parse_time(to_time) if to_time is not None else None
        with output.progress(f"drill {name}: restore") as on_bytes:
            report, files = drill_from_settings(
                state.settings,
                name,
                to_time=when,
                random_target=random_target,
                provider=provider,
                report_dir=report_dir,
                keep=keep,
                on_bytes=on_bytes,
                on_replay=on_bytes.stage(f"drill {name}: replay"),
            )
        output.emit(state, {**report.summary(), "report_files": files}, _drill_text(report, files))
        if not report.passed:
            names = ", ".join(c.name for c in report.failed_checks)
            raise OperationFailed(f"drill {report.id} failed: {names}")

    report = typer.Typer(help="List and show drill reports kept in the repository.", no_args_is_help=True)

    @report.command("list")
    def report_list(
        ctx: typer.Context,
        limit: Annotated[int, typer.Option("--limit", help="How many recent drills.")] = 20,
    ) -> None:
        """List drill reports with their RTO/RPO history."""
        from opsdb.ops.proof.drill_run import report_history
        from opsdb.render.report import render_history_text

        state: AppState = ctx.obj
        name, _ = state.cluster()
        history = report_history(state.settings, name, limit)
        output.emit(state, history.to_dict(), render_history_text(history.rows, history.stats))

    @report.command("show")
    def report_show(
        ctx: typer.Context,
        report_id: Annotated[str, typer.Argument(metavar="ID")],
        fmt: Annotated[str, typer.Option("--format", help="json, md or html.")] = "md",
    ) -> None:
        """Print one drill report."""
        import json

        from opsdb.ops.proof.drill_run import report_show as show

        state: AppState = ctx.obj
        name, _ = state.cluster()
        text = show(state.settings, name, report_id, "json" if state.json else fmt)
        if state.json:
            output.emit(state, json.loads(text))
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")

    app.add_typer(report, name="report")
