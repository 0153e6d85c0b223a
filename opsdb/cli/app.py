"""The Typer root: global options, config loaded once, and the one mapping of errors to exit codes."""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated

import typer
from typer import _click as click  # typer vendors click; its exceptions live here
from typer.exceptions import Abort, Exit

from opsdb import __version__
from opsdb.cli import fastpath, logs, output
from opsdb.cli.commands.completion import COMPLETE_VAR
from opsdb.cli.commands.completion import enable as enable_completion
from opsdb.cli.state import AppState
from opsdb.errors import KeyFileError, OpsdbError, exit_code, is_reported

app = typer.Typer(
    name="opsdb",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help like a Unix tool's (no boxes, no <bool> after flags)
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Exit codes: errors.exit_code is the one policy (wal-fetch must tell PostgreSQL "repository unreadable"
# apart from "file not archived"); this module, the lean WAL path and the WAL helper's replies use it.


# commands that must work without (or before) a configuration file
COMMANDS_WITHOUT_CONFIG = {"key", "demo", "check", "completion"}  # check reports a bad config as a CRITICAL line


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opsdb {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            help="Config file (else $OPSDB_CONFIG, ./opsdb.toml, /etc/opsdb/opsdb.toml).",
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option("--cluster", metavar="NAME", help="Cluster to work on; optional when the config has one."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else there.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Log at debug level; tracebacks of internal errors.")] = False,
    log_format: Annotated[
        str | None, typer.Option("--log-format", metavar="text|json", help="Format of the log lines on stderr.")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Provable PostgreSQL backups: back up, archive WAL, restore to any point, and prove it with drills.

    The options below, except --version and --help, are global: they go before or after the command
    (`opsdb backup --json` is `opsdb --json backup`).
    """
    ctx.obj = AppState(config_path=config, cluster_name=cluster, json=json_output, debug=debug, log_format=log_format)
    output.for_a_program(json_output)
    _invoked.append(ctx.obj)
    if ctx.invoked_subcommand not in COMMANDS_WITHOUT_CONFIG:
        # parse and validate the configuration once, before any work: a bad file changes nothing
        settings = ctx.obj.settings
        ctx.obj.log_format = log_format or settings.log.format
        ctx.obj.log_level = settings.log.level
        ctx.obj.log_file = settings.log.file
    logs.setup(ctx.obj, logs.CURRENT.command or (ctx.invoked_subcommand or ""))
    if logs.CURRENT.command and ctx.invoked_subcommand not in COMMANDS_WITHOUT_CONFIG | UNLOGGED_COMMANDS:
        logs.CURRENT.start(**logs.start_fields(ctx.obj))


def _register_commands() -> None:
    from opsdb.cli.commands import (
        backup,
        catalog,
        check,
        completion,
        demo,
        drill,
        keys,
        metrics,
        pgbouncer,
        replicas,
        restore,
        retention,
        schedule,
        wal,
    )

    modules = (
        keys,
        check,
        backup,
        catalog,
        wal,
        restore,
        drill,
        retention,
        schedule,
        pgbouncer,
        replicas,
        metrics,
        demo,
        completion,
    )
    for module in modules:
        module.register(app)


_register_commands()


@functools.cache
def click_command() -> click.Command:
    """The Click command tree of the app, made to read like a Unix tool's help: plain text (no Rich boxes,
    whatever a command group was declared with)."""
    command = typer.main.get_command(app)
    todo = [command]
    while todo:
        current = todo.pop()
        if hasattr(current, "rich_markup_mode"):
            current.rich_markup_mode = None
        if current is not command and current.epilog is None:
            current.epilog = GLOBAL_OPTIONS_EPILOG
        todo += list(getattr(current, "commands", {}).values())
    return command


GLOBAL_OPTIONS_EPILOG = (
    "Global options, before or after the command: --config PATH, --cluster NAME, --json, --debug, "
    "--log-format text|json (see opsdb --help)."
)


def main(argv: list[str] | None = None) -> None:
    # global options are taken anywhere (hoisted in front of the command), for both paths
    args = fastpath.hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    # wal-push / wal-fetch: the lean path (same code, exit codes per SPEC); see opsdb/cli/fastpath.py
    if (code := fastpath.dispatch(args)) is not None:
        sys.exit(code)
    run_typer(args)


def run_typer(args: list[str]) -> None:
    """Everything the lean path does not handle (cli/fastpath.py dispatched first, once)."""
    command = _guess_command(args)
    debug = "--debug" in args
    if os.environ.get(COMPLETE_VAR):  # a completion request from the script of `opsdb completion SHELL`
        enable_completion()
    as_json = _json_requested(args)
    run = logs.begin(_command_kind(args))
    try:
        # without standalone mode, click returns the code of a typer.Exit instead of exiting
        returned = click_command().main(args=args, prog_name="opsdb", standalone_mode=False)
        if isinstance(returned, int) and returned != 0:
            run.end("failed", returned)
            sys.exit(returned)
    except SystemExit as exc:  # a command's own exit (a failed playbook, check's plugin codes)
        code = exc.code if isinstance(exc.code, int) else 1
        run.end("ok" if code == 0 else "failed", code)
        raise
    except OpsdbError as exc:
        code = exit_code(exc, command)
        run.end("failed", code)
        if is_reported(exc, command):  # a wal-fetch miss is silent
            output.failure(str(exc), _key_hint(exc, command) or exc.hint, code, as_json=as_json)
        sys.exit(code)
    except Exit as exc:
        run.end("ok" if exc.exit_code == 0 else "failed", exc.exit_code)
        sys.exit(exc.exit_code)
    except Abort:
        run.end("interrupted", 130)
        output.failure("aborted", None, 130, as_json=as_json)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        run.end("failed", 2)
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(2)
    except click.exceptions.ClickException as exc:
        # usage errors from Typer/Click: one line naming the problem, exit 2 (after the start line, an end line)
        code = 2 if isinstance(exc, click.exceptions.UsageError) else exc.exit_code
        run.end("failed", code)
        output.failure(exc.format_message(), _usage_hint(exc), code, as_json=as_json)
        sys.exit(code)
    except KeyboardInterrupt:
        run.end("interrupted", 130)
        output.failure("interrupted", None, 130, as_json=as_json)
        sys.exit(130)
    except Exception as exc:  # a bug: one line, traceback only with --debug
        if debug:
            raise
        code = exit_code(exc, command)
        run.end("error", code)
        hint = "rerun with --debug for the traceback, and report it"
        output.failure(f"internal error: {type(exc).__name__}: {exc}", hint, code, as_json=as_json)
        sys.exit(code)
    run.end("ok", 0)
    sys.exit(0)


_invoked: list[AppState] = []  # the root callback's state, for the error path
READING_COMMANDS = {"restore", "restore-dump", "verify", "info", "backups", "report", "drill", "replicas", "replica"}


def _key_hint(exc: OpsdbError, command: str | None) -> str | None:
    """A missing key file on a read path: name the key id the stored objects need (a key made now with
    `opsdb key generate` cannot read them), instead of suggesting to generate one."""
    if not (isinstance(exc, KeyFileError) and "does not exist" in str(exc) and command in READING_COMMANDS):
        return None
    needed = "the key that wrote them"
    try:
        from opsdb.ops.repository.key_ids import key_ids_in_use

        state = _invoked[-1]
        name, _ = state.cluster()
        ids = key_ids_in_use(state.settings, name)
        if ids:
            needed = f"key id {', '.join(ids)}"
    except (OpsdbError, IndexError, OSError):
        pass  # the hint without the id; the error itself is what counts
    return (
        f"the repository's objects were encrypted with {needed}: restore that key file from your key backup "
        "(a new key from `opsdb key generate` cannot read existing backups)"
    )


def _usage_hint(exc: click.ClickException) -> str | None:
    if isinstance(exc, click.exceptions.NoSuchOption) and exc.option_name in ROOT_ONLY_OPTIONS:
        return f"{exc.option_name} goes before the command: opsdb {exc.option_name}"
    if isinstance(exc, click.exceptions.UsageError) and exc.ctx is not None:
        return f"see '{exc.ctx.command_path} --help'"
    return None


# commands that log no start/end lines: PostgreSQL's WAL commands (its log), the completion script
UNLOGGED_COMMANDS = {"wal-push", "wal-fetch", "completion"}


def _command_kind(args: list[str]) -> str:
    """ "backup", "schedule run", ...: the command and, for a group, its subcommand; "" for --help."""
    if "--help" in args or "-h" in args:
        return ""
    words: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in fastpath.GLOBAL_VALUE_OPTIONS:
            skip = True
        elif arg == "--":
            break
        elif not arg.startswith("-"):
            words.append(arg)
    if not words:
        return ""
    group = click_command().commands.get(words[0])  # type: ignore[attr-defined]  # the root command is a group
    return " ".join(words[:2]) if group is not None and hasattr(group, "commands") else words[0]


ROOT_ONLY_OPTIONS = ("--version",)  # the only root options that are not global ones


def _json_requested(args: list[str]) -> bool:
    """--json among the global options (hoisted before the command), as the root callback sees it."""
    command = _guess_command(args)
    head = args[: args.index(command)] if command in args else args
    return "--json" in head and "--help" not in args and "-h" not in args


def _guess_command(args: list[str]) -> str | None:
    """The subcommand name (first positional after the global options)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in fastpath.GLOBAL_VALUE_OPTIONS:
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg
    return None
