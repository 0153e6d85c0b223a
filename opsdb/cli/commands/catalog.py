"""opsdb backups list|show."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli import output


def register(app: typer.Typer) -> None:
    backups = typer.Typer(help="List and show the backups and dumps in the catalog.", no_args_is_help=True)

    @backups.command("list")
    def list_(ctx: typer.Context) -> None:
        """List complete backups and dumps."""
        from opsdb.ops.common.codec import repository
        from opsdb.render.catalog import backups_table
        from opsdb.repo import catalog

        state = ctx.obj
        name, _ = state.cluster()
        repo = repository(state.settings)
        records = catalog.list_backups(repo.storage, name, repo.keys)
        output.emit(state, {"backups": [r.to_json() for r in records]}, lambda: backups_table(records))

    @backups.command("show")
    def show(ctx: typer.Context, backup_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
        """Show one backup's or dump's metadata."""
        from opsdb.ops.common.codec import repository
        from opsdb.render.catalog import backup_details
        from opsdb.repo import catalog

        state = ctx.obj
        name, _ = state.cluster()
        repo = repository(state.settings)
        record = catalog.load_backup(repo.storage, name, backup_id, repo.keys)
        output.emit(state, record.to_dict(), lambda: backup_details(record))

    app.add_typer(backups, name="backups")
