"""opsdb restore, opsdb restore-dump."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli import output


def register(app: typer.Typer) -> None:
    @app.command("restore")
    def restore(
        ctx: typer.Context,
        target_dir: Annotated[str, typer.Option("--target-dir", help="Empty or missing directory to restore into.")],
        backup_id: Annotated[
            str | None, typer.Option("--backup", help="Backup ID (default: the newest that fits the target).")
        ] = None,
        tablespace_map: Annotated[
            list[str] | None,
            typer.Option(
                "--tablespace-map",
                help="OLD=NEW: restore the tablespace at OLD (location, oid or name) into NEW (repeatable).",
            ),
        ] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
        start: Annotated[bool, typer.Option("--start", help="Start the server and wait for the target.")] = False,
        port: Annotated[int | None, typer.Option("--port", help="Port for --start.")] = None,
    ) -> None:
        """Physical restore, optionally to a point in time."""
        from opsdb.ops.restore import restore_from_settings
        from opsdb.render.catalog import restore_plan_text, restore_result_text

        state = ctx.obj
        name, _ = state.cluster()
        with output.progress(f"restore {name}", enabled=not dry_run) as on_bytes:
            plan, result = restore_from_settings(
                state.settings, name, target_dir=target_dir, backup_id=backup_id, tablespace_map=tablespace_map,
                start=start, port=port, dry_run=dry_run, on_bytes=on_bytes,
            )  # fmt: skip
        if result is None:
            doc = {"backup_id": plan.backup.id, "target": plan.target, "recovery_point": None,
                   "target_dir": plan.target_dir, "dry_run": True, "plan": plan.to_dict()}  # fmt: skip
            output.emit(state, doc, lambda: restore_plan_text(plan))
            return
        doc = result.to_dict()
        line = restore_result_text(doc, result.seconds, result.bytes_read)
        if state.json:
            output.info(line)
        output.emit(state, doc, line)

    @app.command("restore-dump")
    def restore_dump(
        ctx: typer.Context,
        dump_id: Annotated[str, typer.Argument(metavar="ID")],
        dbname: Annotated[str, typer.Option("--dbname", help="Conninfo of the target server.")],
        database: Annotated[
            list[str] | None, typer.Option("--database", "-d", help="Database to restore (repeatable).")
        ] = None,
        jobs: Annotated[
            int,
            typer.Option(
                "--jobs",
                "-j",
                min=1,
                max=64,
                help="Parallel pg_restore jobs (stages each dump to a temp file when > 1).",
            ),
        ] = 1,
        clean: Annotated[
            bool, typer.Option("--clean", help="Restore into existing non-empty databases (drop objects first).")
        ] = False,
        globals_: Annotated[
            bool, typer.Option("--globals", help="Restore roles and tablespaces (globals) first.")
        ] = False,
    ) -> None:
        """Restore a logical dump with pg_restore."""
        from opsdb.ops.dump import restore_dump_from_settings

        state = ctx.obj
        name, _ = state.cluster()
        with output.progress(f"restore-dump {dump_id}") as on_bytes:
            result = restore_dump_from_settings(
                state.settings, name, dump_id, conninfo=dbname, databases=tuple(database or ()), jobs=jobs,
                clean=clean, with_globals=globals_, on_bytes=on_bytes,
            )  # fmt: skip
        output.emit(state, result.to_dict(), result.summary())
