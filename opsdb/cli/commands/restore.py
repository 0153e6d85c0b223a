"""opsdb restore, opsdb restore-dump."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli import output
from opsdb.errors import UsageError


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
        to_time: Annotated[str | None, typer.Option("--to-time", help="ISO-8601 time WITH offset or Z.")] = None,
        to_lsn: Annotated[str | None, typer.Option("--to-lsn", help="WAL location, e.g. 16/B374D848.")] = None,
        to_xid: Annotated[str | None, typer.Option("--to-xid", help="Transaction id.")] = None,
        to_name: Annotated[
            str | None, typer.Option("--to-name", help="Restore point (pg_create_restore_point).")
        ] = None,
        latest: Annotated[bool, typer.Option("--latest", help="The end of the archived WAL (the default).")] = False,
        immediate: Annotated[bool, typer.Option("--immediate", help="The end of the backup.")] = False,
        timeline: Annotated[
            str | None,
            typer.Option("--timeline", help="latest, current or N (default: the primary's timeline)."),
        ] = None,
        target_action: Annotated[
            str | None, typer.Option("--target-action", help="promote (default), pause or shutdown.")
        ] = None,
        standby: Annotated[bool, typer.Option("--standby", help="Build a streaming standby.")] = False,
        primary_conninfo: Annotated[
            str | None, typer.Option("--primary-conninfo", help="With --standby: the primary to stream from.")
        ] = None,
        slot: Annotated[str | None, typer.Option("--slot", help="With --standby: replication slot name.")] = None,
        sync_method: Annotated[
            str | None,
            typer.Option("--sync-method", help="fsync (default: every file and directory) or syncfs (per filesystem)."),
        ] = None,
        no_sync: Annotated[
            bool, typer.Option("--no-sync", help="Do not sync the restored files (throwaway targets only).")
        ] = False,
        archive_mode: Annotated[
            str | None,
            typer.Option(
                "--archive-mode",
                help="off (default): the restored copy never archives; keep: it archives as configured "
                "(a restore that replaces the primary).",
            ),
        ] = None,
        accept_gap: Annotated[
            bool,
            typer.Option(
                "--accept-gap", help="Restore up to a gap in the archived WAL instead of refusing (shown in the plan)."
            ),
        ] = False,
        wait_timeout: Annotated[
            float, typer.Option("--wait-timeout", min=1, help="With --start: seconds to wait for the target.")
        ] = 3600.0,
    ) -> None:
        """Restore a base backup, optionally to a point in time."""
        from opsdb.model.target import RecoveryTarget
        from opsdb.ops.recovery.durable import check_sync_method
        from opsdb.ops.recovery.pitr import plan_text
        from opsdb.ops.recovery.restore import restore_from_settings
        from opsdb.render.catalog import restore_plan_text, restore_result_text

        state = ctx.obj
        name, _ = state.cluster()
        recovery = None
        if (
            any(v is not None for v in (to_time, to_lsn, to_xid, to_name, timeline, target_action))
            or latest
            or immediate
        ):
            recovery = RecoveryTarget.from_options(
                to_time=to_time,
                to_lsn=to_lsn,
                to_xid=to_xid,
                to_name=to_name,
                latest=latest,
                immediate=immediate,
                timeline=timeline,
                action=target_action,
            )
        if (primary_conninfo or slot) and not standby:
            raise UsageError("--primary-conninfo and --slot need --standby")
        sync = check_sync_method(sync_method, no_sync=no_sync)
        with output.progress(f"restore {name}", enabled=not dry_run) as on_bytes:
            plan, result = restore_from_settings(
                state.settings,
                name,
                target_dir=target_dir,
                backup_id=backup_id,
                tablespace_map=tablespace_map,
                start=start,
                port=port,
                dry_run=dry_run,
                on_bytes=on_bytes,
                recovery=recovery,
                standby=standby,
                primary_conninfo=primary_conninfo,
                slot=slot,
                sync_method=sync,
                archive_mode=archive_mode,
                accept_gap=accept_gap,
                wait_timeout=wait_timeout,
                on_progress=on_bytes.stage(f"replay WAL {name}") if start else None,
                follow_primary=timeline is None,
            )
        if result is None:
            doc = {
                "backup_id": plan.backup.id,
                "target": plan.target,
                "recovery_point": None,
                "target_dir": plan.target_dir,
                "dry_run": True,
                "plan": plan.to_dict(),
            }
            human = restore_plan_text(plan) + ("\n" + plan_text(plan.recovery) if plan.recovery else "")
            output.emit(state, doc, human)
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
        rename: Annotated[
            str | None,
            typer.Option("--as", metavar="NAME", help="Restore the one chosen database under this name."),
        ] = None,
    ) -> None:
        """Restore a logical dump with pg_restore."""
        from opsdb.ops.dump.logical import restore_dump_from_settings

        state = ctx.obj
        name, _ = state.cluster()
        with output.progress(f"restore-dump {dump_id}") as on_bytes:
            result = restore_dump_from_settings(
                state.settings,
                name,
                dump_id,
                conninfo=dbname,
                databases=tuple(database or ()),
                jobs=jobs,
                clean=clean,
                with_globals=globals_,
                rename=rename,
                on_bytes=on_bytes,
            )
        output.emit(state, result.to_dict(), result.summary())
