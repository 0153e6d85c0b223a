"""opsdb wal-push, opsdb wal-fetch, opsdb info.

wal-push / wal-fetch normally run through cli/fastpath.py (no Typer start-up); these Typer commands call
the same functions, so both paths behave identically.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opsdb.cli import fastpath, output


def register(app: typer.Typer) -> None:
    @app.command("wal-push")
    def wal_push(ctx: typer.Context, path: Annotated[str, typer.Argument(help="%p: path of the WAL file.")]) -> None:
        """Archive one WAL file (PostgreSQL's archive_command).

        Exit 0 only once the file is durably stored.
        """
        state = ctx.obj
        result = fastpath.wal_push(state.config_path, state.cluster_name, path)
        output.emit(state, result, None)

    @app.command("wal-fetch")
    def wal_fetch(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="%f: WAL file name.")],
        dest: Annotated[str, typer.Argument(help="%p: destination path.")],
    ) -> None:
        """Fetch one WAL file (PostgreSQL's restore_command).

        Exit 0 fetched, 1 not archived, >125 repository unreadable.
        """
        state = ctx.obj
        result = fastpath.wal_fetch(state.config_path, state.cluster_name, name, dest)
        output.emit(state, result, None)

    @app.command("info")
    def info(ctx: typer.Context) -> None:
        """Show backups, archived WAL and the recoverable window.

        Backups, WAL archived range, gaps and the recoverable window per timeline.
        """
        from opsdb.ops.recovery.pitr_reach import end_reader_from_settings
        from opsdb.ops.recovery.timelines import live_timeline
        from opsdb.ops.repository.info import cluster_info
        from opsdb.ops.wal.push_fetch import wal_repo_from_settings
        from opsdb.render.info import info_json, info_text

        state = ctx.obj
        name, cfg = state.cluster()
        repo = wal_repo_from_settings(state.settings, name, writable=False)
        read_end = end_reader_from_settings(state.settings, name, repo.storage, repo.keys)
        result = cluster_info(repo, catalog_backups(repo), read_end=read_end, live=live_timeline(cfg.conninfo))
        output.emit(state, info_json(result), lambda: info_text(result))

    @app.command("reinit")
    def reinit(
        ctx: typer.Context,
        yes: Annotated[bool, typer.Option("--yes", help="Confirm moving the cluster to a new identity.")] = False,
    ) -> None:
        """Bind the cluster to its server's new system identifier.

        After initdb or pg_upgrade.
        """
        from opsdb.ops.common.codec import repository
        from opsdb.ops.repository.reinit import reinit as run_reinit

        state = ctx.obj
        name, cluster = state.cluster()
        result = run_reinit(repository(state.settings, writable=True).storage, name, cluster.conninfo, confirm=yes)
        if not result.changed:
            text = f"cluster {name} already has system identifier {result.after}: nothing to do"
        elif result.before is None:
            text = f"cluster {name} initialised with system identifier {result.after}"
        else:
            text = f"cluster {name} moved from system identifier {result.before} to {result.after}; take a backup now"
        output.emit(state, result.to_dict(), text)


def catalog_backups(repo: Any) -> list[Any]:
    """The committed backups of the cluster (repo/catalog.py, written by the backups work)."""
    from opsdb.repo import catalog

    return list(catalog.list_backups(repo.storage, repo.cluster, repo.keys))
