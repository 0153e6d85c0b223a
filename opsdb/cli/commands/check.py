"""opsdb check."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from opsdb.cli import output

if TYPE_CHECKING:
    from opsdb.model.results import CheckReport


def render(report: CheckReport) -> str:
    """One line per check ("OK       repository  s3://b/p writable (12 ms)"), then the overall status."""
    from opsdb.model.results import Status

    width = max((len(c.name) for c in report.checks), default=0)
    lines = [f"{c.status.value:<8} {c.name:<{width}}  {c.detail}" for c in report.checks]
    counts = {s: sum(1 for c in report.checks if c.status is s) for s in Status}
    summary = ", ".join(f"{n} {s.value.lower()}" for s, n in counts.items() if n)
    lines.append(f"{report.status.value}: {summary}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check(
        ctx: typer.Context,
        no_switch: Annotated[
            bool,
            typer.Option(
                "--no-switch", help="Do not switch WAL to prove archiving (for monitoring every few minutes)."
            ),
        ] = False,
    ) -> None:
        """Check config, repository, server and WAL archiving.

        Proven as the server's os_user. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (monitoring-plugin
        convention).
        """
        from opsdb.ops.health import (
            check as health,  # imported on use: keeps psycopg out of every other command's start-up
        )

        state = ctx.obj
        report = health.check(lambda: state.settings, state.cluster_name, as_server=True, switch_wal=not no_switch)
        output.emit(state, report.to_dict(), lambda: render(report))
        # SystemExit, not typer.Exit: with standalone_mode=False click turns Exit into a return value
        raise SystemExit(report.exit_code)

    @app.command("archive-probe", hidden=True)
    def archive_probe(ctx: typer.Context) -> None:
        """What `check` runs as the server's user: repository, key and spool as archive_command sees them."""
        from opsdb.ops.health import check as health

        state = ctx.obj
        doc = health.probe(state.settings, state.cluster_name)
        output.emit(state, doc, lambda: json.dumps(doc))
