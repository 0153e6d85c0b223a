"""opsdb backups list|show."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    backups = typer.Typer(help="The backup catalog.", no_args_is_help=True)

    @backups.command("list")
    def list_(ctx: typer.Context) -> None:
        """List complete backups and dumps."""
        raise not_built("backups list")

    @backups.command("show")
    def show(ctx: typer.Context, backup_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
        """Show one backup's metadata."""
        raise not_built("backups show")

    app.add_typer(backups, name="backups")
