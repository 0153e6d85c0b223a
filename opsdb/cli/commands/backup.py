"""opsdb backup, opsdb dump."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    @app.command("backup")
    def backup(
        ctx: typer.Context,
        from_standby: Annotated[bool, typer.Option("--from-standby", help="Take the backup from a standby.")] = False,
    ) -> None:
        """Physical base backup (pg_basebackup) streamed into the repository."""
        raise not_built("backup")

    @app.command("dump")
    def dump(
        ctx: typer.Context,
        database: Annotated[list[str] | None, typer.Option("--database", "-d", help="Database to dump (repeatable); default all.")] = None,
        with_passwords: Annotated[bool, typer.Option("--with-passwords", help="Include role password hashes in globals.")] = False,
    ) -> None:
        """Logical dumps: pg_dump -Fc per database plus globals."""
        raise not_built("dump")
