"""opsdb metrics (moved here from pgbouncer.py; registered by cli/app.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli import output


def register(app: typer.Typer) -> None:
    @app.command("metrics")
    def metrics(
        ctx: typer.Context,
        textfile: Annotated[str | None, typer.Option("--textfile", help="Write atomically to this .prom file.")] = None,
        scheduler_state: Annotated[
            str | None, typer.Option("--state-dir", help="Scheduler state dir (job results).")
        ] = None,
    ) -> None:
        """Print Prometheus metrics: backups, WAL, drills, jobs.

        Backups, WAL, drills, replicas and scheduled jobs in the Prometheus text format.
        """
        from opsdb.automation.history import JobHistory, state_dir
        from opsdb.ops.health import metrics as ops_metrics

        state = ctx.obj
        settings = state.settings
        clusters = (
            [state.cluster()[0]] if state.cluster_name or len(settings.clusters) == 1 else sorted(settings.clusters)
        )
        jobs = JobHistory(state_dir(scheduler_state, settings.scheduler.state_dir)).records()
        text = ops_metrics.collect_from_settings(settings, clusters, job_records=jobs)
        target = textfile or (str(settings.metrics.textfile) if settings.metrics.textfile else None)
        if target:
            path = ops_metrics.write_textfile(target, text)
            output.emit(state, {"textfile": str(path), "bytes": len(text)}, f"wrote {path} ({len(text)} bytes)")
        else:
            output.emit(state, {"metrics": text}, text)
