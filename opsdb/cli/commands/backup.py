"""opsdb backup, opsdb dump."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli import output
from opsdb.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command("backup")
    def backup(
        ctx: typer.Context,
        from_standby: Annotated[bool, typer.Option("--from-standby", help="Take the backup from a standby.")] = False,
        incremental: Annotated[
            bool,
            typer.Option(
                "--incremental",
                help="Only what changed since the newest complete backup (PostgreSQL 17+, summarize_wal = on).",
            ),
        ] = False,
        from_id: Annotated[
            str | None, typer.Option("--from", metavar="ID", help="With --incremental: the backup to build on.")
        ] = None,
    ) -> None:
        """Take a base backup of the cluster into the repository.

        pg_basebackup streamed, compressed and encrypted into the repository; --incremental on PostgreSQL 17+.
        """
        from opsdb.ops.backup.physical import backup_from_settings
        from opsdb.ops.common.estimate import backup_bytes
        from opsdb.render.catalog import summary_line

        state = ctx.obj
        name, cluster = state.cluster()
        if from_id is not None and not incremental:
            raise UsageError("--from ID is only for --incremental", hint="opsdb backup --incremental --from ID")
        # the bar's 100 %: the databases' size (an incremental backup is smaller: the bar then ends early)
        total = backup_bytes(cluster.conninfo) if output.is_terminal() and not incremental else None
        with output.progress(f"backup {name}", total) as on_bytes:
            result = backup_from_settings(
                state.settings,
                name,
                from_standby=from_standby,
                incremental=incremental,
                incremental_from=from_id,
                on_bytes=on_bytes,
            )
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
        """Take logical dumps: pg_dump per database plus globals."""
        from opsdb.ops.common.estimate import dump_bytes
        from opsdb.ops.dump.logical import dump_from_settings
        from opsdb.render.catalog import summary_line

        state = ctx.obj
        name, cluster = state.cluster()
        # the bar's 100 %, estimated: the tables' data (pg_dump writes no indexes)
        total = dump_bytes(cluster.conninfo, tuple(database or ())) if output.is_terminal() else None
        with output.progress(f"dump {name}", total) as on_bytes:
            result = dump_from_settings(
                state.settings, name, databases=tuple(database or ()), with_passwords=with_passwords, on_bytes=on_bytes
            )
        line = summary_line("dump", result.record, result.seconds)
        if state.json:
            output.info(line)
        output.emit(state, result.to_dict(), line)
