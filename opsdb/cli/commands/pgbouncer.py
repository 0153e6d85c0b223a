"""opsdb pgbouncer generate|check, opsdb replicas check, opsdb replica create, opsdb metrics."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    pgb = typer.Typer(help="PgBouncer configuration.", no_args_is_help=True)

    @pgb.command("generate")
    def generate(
        ctx: typer.Context,
        out_dir: Annotated[str, typer.Option("--out-dir", help="Where to write pgbouncer.ini and userlist.txt.")] = ".",
        discover: Annotated[bool, typer.Option("--discover", help="Read databases and SCRAM verifiers from the cluster.")] = False,
    ) -> None:
        """Write pgbouncer.ini and userlist.txt (0600)."""
        raise not_built("pgbouncer generate")

    @pgb.command("check")
    def check(ctx: typer.Context, ini: Annotated[str, typer.Argument(help="pgbouncer.ini to check.")]) -> None:
        """Validate a pgbouncer.ini (and load it in a real pgbouncer when present)."""
        raise not_built("pgbouncer check")

    app.add_typer(pgb, name="pgbouncer")

    replicas = typer.Typer(help="Replication health.", no_args_is_help=True)

    @replicas.command("check")
    def replicas_check(
        ctx: typer.Context,
        max_lag_bytes: Annotated[int | None, typer.Option("--max-lag-bytes")] = None,
        max_lag_seconds: Annotated[float | None, typer.Option("--max-lag-seconds")] = None,
    ) -> None:
        """Lag, slots and standby state (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""
        raise not_built("replicas check")

    app.add_typer(replicas, name="replicas")

    @app.command("metrics")
    def metrics(
        ctx: typer.Context,
        textfile: Annotated[str | None, typer.Option("--textfile", help="Write atomically to this .prom file.")] = None,
    ) -> None:
        """Prometheus exposition of backups, WAL, drills, replicas and jobs."""
        raise not_built("metrics")
