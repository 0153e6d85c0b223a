"""opsdb replicas check|create (and `replica create`, the old spelling of `replicas create`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsdb.cli import output
from opsdb.errors import OperationFailed, UsageError

if TYPE_CHECKING:
    from opsdb.ops.replicas.create import ReplicaCreated


def register(app: typer.Typer) -> None:
    replicas = typer.Typer(help="Check replication health and build standbys.", no_args_is_help=True)

    @replicas.command("check")
    def replicas_check(
        ctx: typer.Context,
        max_lag_bytes: Annotated[
            int | None, typer.Option("--max-lag-bytes", help="Critical replay lag in bytes.")
        ] = None,
        max_lag_seconds: Annotated[
            float | None, typer.Option("--max-lag-seconds", help="Critical replay lag in seconds.")
        ] = None,
    ) -> None:
        """Check replica lag, slots and standby state.

        Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
        """
        from opsdb.ops.replicas import lag as ops
        from opsdb.render.replicas import render_replicas

        state = ctx.obj
        _, cluster = state.cluster()
        report = ops.check_replicas(cluster, max_lag_bytes=max_lag_bytes, max_lag_seconds=max_lag_seconds)
        output.emit(state, report.to_dict(), lambda: render_replicas(report))
        if report.exit_code:  # SystemExit, not typer.Exit: click would return typer.Exit's code (cli/app.py)
            raise SystemExit(report.exit_code)

    # `replicas create` builds a standby; `replica create` is its old spelling, kept as a hidden alias
    replica = typer.Typer(
        help="Build a standby (old spelling of `replicas create`).", no_args_is_help=True, hidden=True
    )

    @replicas.command("create")
    @replica.command("create")
    def replica_create(
        ctx: typer.Context,
        target_dir: Annotated[str, typer.Option("--target-dir", help="Empty directory for the standby's data.")],
        from_primary: Annotated[
            bool, typer.Option("--from-primary", help="pg_basebackup -R from the primary.")
        ] = False,
        from_backup: Annotated[
            str | None, typer.Option("--from-backup", help="Backup ID or 'latest' from the repository.")
        ] = None,
        slot: Annotated[
            str | None,
            typer.Option(
                "--slot", help="Physical replication slot on the primary (created; --from-backup reuses an idle one)."
            ),
        ] = None,
        name: Annotated[
            str | None, typer.Option("--name", help="application_name the primary will list it under.")
        ] = None,
    ) -> None:
        """Build a standby from the primary or from a backup.

        From the primary with pg_basebackup -R, or from a backup in the repository.
        """
        if from_primary == (from_backup is not None):
            raise UsageError("give exactly one of --from-primary or --from-backup ID|latest")
        from opsdb.ops.replicas import create as ops

        state = ctx.obj
        cluster_name, cluster = state.cluster()
        if from_backup is not None:
            with output.progress(f"replicas create from {from_backup}") as on_bytes:
                result = ops.create_replica_from_backup(
                    state.settings,
                    cluster_name,
                    Path(target_dir),
                    backup=from_backup,
                    slot=slot,
                    application_name=name,
                    on_bytes=on_bytes,
                )
        else:
            from opsdb.pg.tools import PgTools, find_bin_dir
            from opsdb.proc import LocalRunner

            result = ops.create_replica_from_primary(
                cluster.conninfo,
                Path(target_dir),
                runner=LocalRunner(),
                tools=PgTools(find_bin_dir(cluster.pg_bin_dir)),
                os_user=cluster.os_user,
                slot=slot,
                application_name=name,
            )
        if not result.primary_conninfo_written:
            raise OperationFailed(f"{target_dir} was built but has no standby.signal")
        output.emit(state, result.to_dict(), _replica_created_text(result))

    app.add_typer(replicas, name="replicas")
    app.add_typer(replica, name="replica")


def _replica_created_text(result: ReplicaCreated) -> str:
    source = "the primary" if result.source == "primary" else f"backup {result.backup_id}"
    lines = [f"standby data directory ready in {result.target_dir} (from {source})"]
    if result.slot:
        lines.append(
            f"replication slot {result.slot} on the primary ({'created' if result.slot_created else 'existing'})"
        )
    if result.passfile:
        lines.append(f"primary password in {result.passfile} (0600; primary_conninfo names it with passfile=)")
    if result.source != "primary":
        lines.append("it replays archived WAL with opsdb wal-fetch, then streams from the primary")
    lines.append(f"start it as the server's OS user: pg_ctl -D {result.target_dir} -o '-p PORT' start")
    return "\n".join(lines)
