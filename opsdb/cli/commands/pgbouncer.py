"""opsdb pgbouncer generate|check|status."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsdb.cli import output
from opsdb.errors import UsageError

if TYPE_CHECKING:
    from opsdb.cli.state import AppState
    from opsdb.proc import LocalRunner


def _runner() -> LocalRunner:
    from opsdb.proc import LocalRunner

    return LocalRunner()


def _run_as(state: AppState) -> str | None:
    """pgbouncer and pg_basebackup refuse root: run them as the cluster's os_user (postgres by default)."""
    if os.geteuid() != 0:
        return None
    try:
        return state.cluster()[1].os_user
    except UsageError:
        return "postgres"


def _exit(code: int) -> None:
    """Exit with a monitoring/check status. SystemExit, not typer.Exit: with standalone_mode=False
    click turns typer.Exit into a return value, which cli.app.main does not pass on (yet)."""
    if code:
        raise SystemExit(code)


def register(app: typer.Typer) -> None:
    pgb = typer.Typer(help="Generate, check and grade PgBouncer configuration.", no_args_is_help=True)

    @pgb.command("generate")
    def generate(
        ctx: typer.Context,
        out_dir: Annotated[str, typer.Option("--out-dir", help="Where to write pgbouncer.ini and userlist.txt.")] = ".",
        discover: Annotated[
            bool, typer.Option("--discover", help="Read databases and SCRAM verifiers from the cluster.")
        ] = False,
    ) -> None:
        """Write pgbouncer.ini and userlist.txt sized for the server.

        userlist.txt is written 0600; pools are sized against the server's max_connections.
        """
        from opsdb.ops.pooler import generate as ops
        from opsdb.render.pgbouncer_text import render_generate

        state = ctx.obj
        _, cluster = state.cluster()
        result = ops.generate(
            state.settings.pgbouncer, cluster.conninfo, Path(out_dir), discover_catalog=discover, runner=_runner()
        )
        output.emit(state, result.to_dict(), lambda: render_generate(result.to_dict()))

    @pgb.command("check")
    def check(ctx: typer.Context, ini: Annotated[str, typer.Argument(help="pgbouncer.ini to check.")]) -> None:
        """Validate a pgbouncer.ini (exit 1 on problems).

        Loads it in a real pgbouncer when one is installed.
        """
        from opsdb.ops.pooler import check as ops
        from opsdb.ops.pooler.target import find_pgbouncer
        from opsdb.render.pgbouncer_text import render_check

        state = ctx.obj
        cfg = state.settings.pgbouncer
        limits = None
        if state.settings.clusters:
            _, cluster = state.cluster()
            limits = ops.server_limits_reader(cluster.conninfo)
        result = ops.check_ini_file(
            Path(ini),
            runner=_runner(),
            pgbouncer_bin=find_pgbouncer(cfg.binary),
            run_as=_run_as(state),
            server_limits=limits,
            instances=cfg.instances,
            server_reserve=cfg.server_reserve,
            target_version_override=cfg.target_version,
        )
        output.emit(state, result.to_dict(), lambda: render_check(result.to_dict()))
        _exit(0 if result.ok else 1)

    @pgb.command("status")
    def status(
        ctx: typer.Context,
        conninfo: Annotated[
            str | None, typer.Option("--conninfo", help="Admin console connection (default: from [pgbouncer]).")
        ] = None,
        user: Annotated[
            str | None, typer.Option("--user", help="Admin/stats user (default: the first of admin_users/stats_users).")
        ] = None,
        wait_warning: Annotated[
            float | None, typer.Option("--wait-warning", min=0, help="Seconds a client may wait before WARNING.")
        ] = None,
        wait_critical: Annotated[
            float | None,
            typer.Option(
                "--wait-critical", min=0, help="Seconds of waiting for CRITICAL (default: query_wait_timeout/2)."
            ),
        ] = None,
    ) -> None:
        """Grade PgBouncer pools, waits and client slots.

        Read from the admin console; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
        """
        from opsdb.ops.pooler import status as ops
        from opsdb.render.pgbouncer_status import render_status

        state = ctx.obj
        cfg = state.settings.pgbouncer
        if wait_warning is not None and wait_critical is not None and wait_critical < wait_warning:
            raise UsageError("--wait-critical is below --wait-warning")
        target = conninfo or ops.admin_conninfo(cfg, user)
        result = ops.pgbouncer_status(
            target, ops.thresholds_from(cfg, wait_warning=wait_warning, wait_critical=wait_critical), cfg=cfg
        )
        output.emit(state, result.to_dict(), lambda: render_status(result.to_dict()))
        _exit(result.exit_code)

    app.add_typer(pgb, name="pgbouncer")
