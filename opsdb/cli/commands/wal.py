"""opsdb wal-push, opsdb wal-fetch, opsdb info."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    @app.command("wal-push")
    def wal_push(ctx: typer.Context, path: Annotated[str, typer.Argument(help="%p: path of the WAL file.")]) -> None:
        """archive_command: store one WAL file; exit 0 only once it is durably stored."""
        raise not_built("wal-push")

    @app.command("wal-fetch")
    def wal_fetch(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="%f: WAL file name.")],
        dest: Annotated[str, typer.Argument(help="%p: destination path.")],
    ) -> None:
        """restore_command: 0 fetched, 1 not archived, >125 repository unreadable."""
        raise not_built("wal-fetch")

    @app.command("info")
    def info(ctx: typer.Context) -> None:
        """Backups, WAL archived range, gaps and the recoverable window per timeline."""
        raise not_built("info")
