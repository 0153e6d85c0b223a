"""opsdb retention apply."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    retention = typer.Typer(help="Retention policies.", no_args_is_help=True)

    @retention.command("apply")
    def apply(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be deleted; change nothing.")] = False,
    ) -> None:
        """Apply the cluster's retention policy to backups, dumps and WAL."""
        raise not_built("retention apply")

    app.add_typer(retention, name="retention")
