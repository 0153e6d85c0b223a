"""The Typer root: global options, config loaded once, and the one mapping of errors to exit codes."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer import _click as click  # typer vendors click; its exceptions live here
from typer.exceptions import Abort, Exit

from opsdb import __version__
from opsdb.cli import fastpath, output
from opsdb.cli.fastpath import WAL_FETCH_MISSING_EXIT, WAL_FETCH_UNREADABLE_EXIT
from opsdb.cli.state import AppState
from opsdb.errors import OpsdbError

app = typer.Typer(
    name="opsdb",
    help="Provable PostgreSQL backups: backup, archive WAL, restore to any point, and prove it with drills.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# wal-fetch must tell PostgreSQL "repository unreadable" apart from "file not archived": exit codes
# above 125 make PostgreSQL abort recovery instead of ending it early at the wrong point. The mapping
# lives with the lean wal path (cli/fastpath.py) and is used from here too: one mapping, not two.


# commands that must work without (or before) a configuration file
COMMANDS_WITHOUT_CONFIG = {"key", "demo", "check"}  # check reports a bad config as a CRITICAL line


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opsdb {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Config file (else $OPSDB_CONFIG, ./opsdb.toml, /etc/opsdb/opsdb.toml)."),
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="Cluster name; optional when the config has one.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else there.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
    log_format: Annotated[str | None, typer.Option("--log-format", help="text or json logs on stderr.")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = AppState(config_path=config, cluster_name=cluster, json=json_output, debug=debug, log_format=log_format)
    if ctx.invoked_subcommand not in COMMANDS_WITHOUT_CONFIG:
        # parse and validate the configuration once, before any work: a bad file changes nothing
        settings = ctx.obj.settings
        ctx.obj.log_format = log_format or settings.log.format
        ctx.obj.log_level = settings.log.level
    output.setup_logging(ctx.obj)


def _register_commands() -> None:
    from opsdb.cli.commands import (
        backup,
        catalog,
        check,
        demo,
        drill,
        keys,
        metrics,
        pgbouncer,
        restore,
        retention,
        schedule,
        wal,
    )

    for module in (keys, check, backup, catalog, wal, restore, drill, retention, schedule, pgbouncer, metrics, demo):
        module.register(app)


_register_commands()


def exit_code_for(exc: OpsdbError, command: str | None) -> int:
    """The one place that decides exit codes (SPEC: Exit codes)."""
    return fastpath.exit_code_for(exc, command or "")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # wal-push / wal-fetch: the lean path (same code, exit codes per SPEC); see opsdb/cli/fastpath.py
    if (code := fastpath.dispatch(args)) is not None:
        sys.exit(code)
    command = _guess_command(args)
    debug = "--debug" in args
    try:
        # without standalone mode, click returns the code of a typer.Exit instead of exiting
        returned = app(args=args, prog_name="opsdb", standalone_mode=False)
        if isinstance(returned, int) and returned != 0:
            sys.exit(returned)
    except OpsdbError as exc:
        code = exit_code_for(exc, command)
        quiet = command == "wal-fetch" and code == WAL_FETCH_MISSING_EXIT
        output.error(exc, quiet=quiet)
        if _json_requested(args) and not quiet:
            output.error_json(exc, code)
        sys.exit(code)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except Abort:
        output.error_text("aborted")
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(2)
    except click.exceptions.ClickException as exc:
        # usage errors from Typer/Click: one line naming the problem, exit 2
        output.error_text(exc.format_message())
        if isinstance(exc, click.exceptions.UsageError) and exc.ctx is not None:
            sys.stderr.write(f"hint: see '{exc.ctx.command_path} --help'\n")
        sys.exit(2 if isinstance(exc, click.exceptions.UsageError) else exc.exit_code)
    except KeyboardInterrupt:
        output.error_text("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: one line, traceback only with --debug
        if debug:
            raise
        output.error_text(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(1 if command != "wal-fetch" else WAL_FETCH_UNREADABLE_EXIT)
    sys.exit(0)


_OPTIONS_WITH_VALUE = {"--config", "-c", "--cluster", "--log-format"}


def _json_requested(args: list[str]) -> bool:
    """--json among the global options (before the command), as the root callback would see it."""
    command = _guess_command(args)
    head = args[: args.index(command)] if command in args else args
    return "--json" in head


def _guess_command(args: list[str]) -> str | None:
    """The subcommand name (first positional after the global options)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in _OPTIONS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg
    return None
