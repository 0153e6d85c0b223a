"""opsdb restore, opsdb restore-dump."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    @app.command("restore")
    def restore(
        ctx: typer.Context,
        target_dir: Annotated[str, typer.Option("--target-dir", help="Empty or missing directory to restore into.")],
        backup_id: Annotated[str | None, typer.Option("--backup", help="Backup ID (default: the newest that fits the target).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
        start: Annotated[bool, typer.Option("--start", help="Start the server and wait for the target.")] = False,
        port: Annotated[int | None, typer.Option("--port", help="Port for --start.")] = None,
    ) -> None:
        """Physical restore, optionally to a point in time."""
        raise not_built("restore")

    @app.command("restore-dump")
    def restore_dump(
        ctx: typer.Context,
        dump_id: Annotated[str, typer.Argument(metavar="ID")],
        dbname: Annotated[str, typer.Option("--dbname", help="Conninfo of the target server.")],
        database: Annotated[list[str] | None, typer.Option("--database", "-d", help="Database to restore (repeatable).")] = None,
    ) -> None:
        """Restore a logical dump with pg_restore."""
        raise not_built("restore-dump")
