"""opsdb key generate."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from opsdb.cli import output
from opsdb.stream.crypto import generate_key_file


def register(app: typer.Typer) -> None:
    key = typer.Typer(help="Encryption keys.", no_args_is_help=True)

    @key.command("generate")
    def generate(
        ctx: typer.Context, path: Annotated[str, typer.Argument(help="Where to write the new key (mode 0600).")]
    ) -> None:
        """Write a new random 256-bit key; refuses to overwrite an existing file."""
        new = generate_key_file(path)
        where = os.path.abspath(path)
        output.emit(
            ctx.obj,
            {"path": where, "key_id": new.id},
            f"wrote key {where} (id {new.id}, mode 0600)\n"
            "keep a copy somewhere safe: without this key encrypted backups cannot be restored",
        )

    app.add_typer(key, name="key")
