"""opsdb key generate."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    key = typer.Typer(help="Encryption keys.", no_args_is_help=True)

    @key.command("generate")
    def generate(ctx: typer.Context, path: Annotated[str, typer.Argument(help="Where to write the new key (mode 0600).")]) -> None:
        """Write a new random 256-bit key; refuses to overwrite an existing file."""
        raise not_built("key generate")

    app.add_typer(key, name="key")
