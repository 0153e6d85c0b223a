"""opsdb backup, opsdb dump."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli import output


def register(app: typer.Typer) -> None:
    @app.command("backup")
    def backup(
        ctx: typer.Context,
        from_standby: Annotated[bool, typer.Option("--from-standby", help="Take the backup from a standby.")] = False,
    ) -> None:
        """Physical base backup (pg_basebackup) streamed into the repository."""
        from opsdb.ops.backup import backup_from_settings
        from opsdb.render.catalog import summary_line

        state = ctx.obj
        name, _ = state.cluster()
        with output.progress(f"backup {name}") as on_bytes:
            result = backup_from_settings(state.settings, name, from_standby=from_standby, on_bytes=on_bytes)
        line = summary_line("backup", result.record, result.seconds)
        if state.json:
            output.info(line)
        output.emit(state, result.to_dict(), line)

    @app.command("dump")
    def dump(
        ctx: typer.Context,
        database: Annotated[
            list[str] | None, typer.Option("--database", "-d", help="Database to dump (repeatable); default all.")
        ] = None,
        with_passwords: Annotated[
            bool, typer.Option("--with-passwords", help="Include role password hashes in globals.")
        ] = False,
    ) -> None:
        """Logical dumps: pg_dump -Fc per database plus globals."""
        from opsdb.ops.dump import dump_from_settings
        from opsdb.render.catalog import summary_line

        state = ctx.obj
        name, _ = state.cluster()
        with output.progress(f"dump {name}") as on_bytes:
            result = dump_from_settings(
                state.settings, name, databases=tuple(database or ()), with_passwords=with_passwords, on_bytes=on_bytes
            )
        line = summary_line("dump", result.record, result.seconds)
        if state.json:
            output.info(line)
        output.emit(state, result.to_dict(), line)
