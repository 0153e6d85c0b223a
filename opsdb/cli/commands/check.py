"""opsdb check."""

from __future__ import annotations

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check(ctx: typer.Context) -> None:
        """Config, repository, server and archiving sanity (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""
        raise not_built("check")
