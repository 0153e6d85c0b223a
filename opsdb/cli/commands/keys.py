"""opsdb key generate."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from opsdb.cli import output
from opsdb.errors import UsageError
from opsdb.stream.crypto import generate_key_file

if TYPE_CHECKING:
    from opsdb.cli.state import AppState
    from opsdb.ops.common.privileges import Account


def register(app: typer.Typer) -> None:
    key = typer.Typer(help="Generate encryption keys.", no_args_is_help=True)

    @key.command("generate")
    def generate(
        ctx: typer.Context,
        path: Annotated[str, typer.Argument(help="Where to write the new key (mode 0600).")],
        owner: Annotated[
            str | None,
            typer.Option(
                "--owner",
                help="OS user who owns the key (root only; default when run as root: the cluster's os_user).",
            ),
        ] = None,
    ) -> None:
        """Write a new random 256-bit key file.

        Refuses to overwrite an existing file. Run as root, the key goes to the configured cluster's
        os_user (or --owner), so PostgreSQL's archive_command can read it; root reads every file anyway.
        Never readable by group or others."""
        from opsdb.ops.common import privileges

        account = _owner(ctx.obj, owner)
        new = generate_key_file(path, owner=account.owner if account is not None else None)
        where = os.path.abspath(path)
        name = account.name if account is not None else privileges.current_user()
        readers = f"{name} and root" if name != "root" else "root only"
        doc = {"path": where, "key_id": new.id, "owner": name, "readable_by": readers}
        note = ""
        if name == "root":
            note = "\nPostgreSQL's archive_command cannot read it: give it to the server's user with --owner USER"
        output.emit(
            ctx.obj,
            doc,
            f"wrote key {where} (id {new.id}, mode 0600, owner {name}: readable by {readers}){note}\n"
            "keep a copy somewhere safe: without this key encrypted backups cannot be restored",
        )

    app.add_typer(key, name="key")


def _owner(state: AppState, requested: str | None) -> Account | None:
    """The account the key goes to: --owner, else (as root) the cluster's os_user; None: this user."""
    from opsdb.ops.common import privileges

    if requested is None:
        return privileges.handover(state.settings, state.cluster_name)
    account = privileges.account(requested)
    if account is None:
        raise UsageError(f"--owner {requested}: no such user on this machine")
    if account.uid != os.geteuid() and os.geteuid() != 0:
        raise UsageError(
            f"--owner {requested}: only root can give a key to another user; run: "
            f"sudo opsdb key generate --owner {requested} PATH (or run it as {requested})"
        )
    return account if account.uid != os.geteuid() else None
