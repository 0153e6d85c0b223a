"""opsdb demo."""

from __future__ import annotations

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(ctx: typer.Context) -> None:
        """Throwaway cluster + local repository: backup, WAL, PITR drill, report."""
        raise not_built("demo")
