"""The lean path for wal-push and wal-fetch: PostgreSQL runs them once per WAL file, serially.

Start-up cost is archiving throughput here, so this module avoids typer/rich, pydantic and boto3: it
parses the global options itself and hands anything unusual (--help, unknown options, other commands)
to the Typer app. A call reads only the routing keys (cli/routing.py: [wal] async/spool_dir,
repository.url, the cluster name; cached per config), then asks the cluster's WAL helper
(ops/wal/helper.py, started on demand) over a Unix socket (ops/wal/spool.py) and exits with what it
answered. Validation is never duplicated: the real work always runs with the fully validated
settings, in the helper, or in-process when no helper can serve this caller (another uid, no usable
spool, a helper that cannot start: then the in-process path reports why).
Every import here is paid once per WAL file: only small parts of the standard library load with it.

Entry point: `main()` (the console script points here; see docs/wal.md). The helper runs as
`python -I -m opsdb.cli.fastpath [global options] wal-helper`.
"""

from __future__ import annotations

import os
import sys

from opsdb import errors
from opsdb.cli.routing import Routing, read_routing

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~4 ms per WAL file at run time
    from typing import Any

PUSH_WAIT_SECONDS = 600.0  # how long one wal-push waits for the helper before failing (PostgreSQL retries)
FETCH_WAIT_SECONDS = 600.0  # how long one wal-fetch waits for the helper's answer
COMMANDS = ("wal-push", "wal-fetch", "wal-helper")
HELPER_ENV = {"MALLOC_ARENA_MAX": "2"}
# The global options, the one list (cli/app.py declares them on the Typer root with these names): they are
# accepted before or after the command, like pgBackRest's, WAL-G's and Barman's; hoist_global_options()
# moves them in front of the command for both paths. No command may define an option of these names.
GLOBAL_VALUE_OPTIONS = ("--config", "-c", "--cluster", "--log-format")
GLOBAL_FLAGS = ("--json", "--debug")


class _NotLean(Exception):
    """Let the Typer app handle this command line."""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    code = dispatch(args)
    if code is None:
        from opsdb.cli.app import run_typer

        try:
            run_typer(hoist_global_options(args))
        except SystemExit as exc:
            if argv is None:  # the console script or `python -m opsdb`: the process ends here
                end_process(exc.code)
            raise
        return
    if argv is None and ("wal-fetch" in args or "wal-push" in args) and "threading" not in sys.modules:
        exit_at_once(code)
    sys.exit(code)


def exit_at_once(code: int) -> None:
    """End a wal-fetch or wal-push the helper answered without the interpreter's teardown: ~1.5 ms of
    CPU per call here, on recovery's and archiving's path (PostgreSQL runs restore_command and
    archive_command once per segment, serially). A push is answered only once it is stored.
    Only when no thread was ever started (no in-process work ran): nothing is left to finish but
    the output, which is flushed first (a closed stdout makes it 120, as Python's own exit does)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and code == 0:
                code = 120
    os._exit(code & 0xFF)


def end_process(status: object) -> None:
    """Exit with SystemExit's `status` without tearing the interpreter down, when that is safe.

    After a Typer command the interpreter holds pydantic, botocore, rich and their caches; freeing
    them module by module took 80-120 ms at exit (measured after `opsdb backup`), 3 % of a 1.5 GB
    backup. Nothing of opsdb's needs that teardown: stored objects, catalog entries and locks are
    finished in `finally` blocks and child processes are waited for before a command returns.
    So: flush stdio and the log handlers, then os._exit. When a non-daemon thread is still running,
    Python would wait for it at exit; then this returns and the caller exits normally.
    """
    import threading

    main_thread = threading.main_thread()
    if any(t.is_alive() and not t.daemon and t is not main_thread for t in threading.enumerate()):
        return
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:  # sys.exit("message"): Python prints it on stderr and exits 1
        sys.stderr.write(f"{status}\n")
        code = 1
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream; Python exits 120 then
            if stream is sys.stdout and code == 0:
                code = 120
    os._exit(code & 0xFF)


def hoist_global_options(args: list[str]) -> list[str]:
    """`opsdb backup --config X --json` -> `opsdb --config X --json backup`: global options found after the
    command (up to a `--`) move in front of it, in their order; everything else keeps its place."""
    head: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-"):  # the global options already in front
        step = 2 if args[i] in GLOBAL_VALUE_OPTIONS else 1
        head += args[i : i + step]
        i += step
    hoisted: list[str] = []
    rest: list[str] = []
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name in GLOBAL_FLAGS and name == arg:
            hoisted.append(arg)
        elif name in GLOBAL_VALUE_OPTIONS and "=" in arg:
            hoisted.append(arg)
        elif arg in GLOBAL_VALUE_OPTIONS and i + 1 < len(args):
            hoisted += args[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return head + hoisted + rest


def _parse(args: list[str]) -> tuple[dict[str, Any], str, list[str]]:
    opts: dict[str, Any] = {"--json": False, "--debug": False}
    args = hoist_global_options(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in GLOBAL_VALUE_OPTIONS and i + 1 < len(args):
            opts["--config" if arg == "-c" else arg] = args[i + 1]
            i += 2
        elif arg.startswith("--") and "=" in arg and arg.split("=", 1)[0] in GLOBAL_VALUE_OPTIONS:
            name, value = arg.split("=", 1)
            opts[name] = value
            i += 1
        elif arg in GLOBAL_FLAGS:
            opts[arg] = True
            i += 1
        elif arg.startswith("-"):
            raise _NotLean
        else:
            break
    if i >= len(args) or args[i] not in COMMANDS:
        raise _NotLean
    command, rest = args[i], args[i + 1 :]
    if any(a.startswith("-") and a not in ("--data-dir",) for a in rest):
        raise _NotLean  # --help and friends: Typer explains
    return opts, command, rest


def dispatch(args: list[str]) -> int | None:
    """Run wal-push / wal-fetch (and the helper) without Typer; None: not handled here."""
    try:
        opts, command, rest = _parse(args)
    except _NotLean:
        return None
    if command in ("wal-push", "wal-fetch") and len(rest) != (1 if command == "wal-push" else 2):
        return None
    _LOGGING.update(opts)
    try:
        if command == "wal-push":
            result = wal_push(opts.get("--config"), opts.get("--cluster"), rest[0])
        elif command == "wal-fetch":
            result = wal_fetch(opts.get("--config"), opts.get("--cluster"), rest[0], rest[1])
        else:
            return run_helper(opts)
    except (errors.OpsdbError, KeyboardInterrupt) as exc:
        if errors.is_reported(exc, command):
            message = str(exc) if isinstance(exc, errors.OpsdbError) else "interrupted"
            _print_error(message, getattr(exc, "hint", None))
        return errors.exit_code(exc, command)
    except Exception as exc:  # a bug: one line; wal-fetch must still make recovery stop, not end early
        if opts["--debug"]:
            raise
        _print_error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", None)
        return errors.exit_code(exc, command)
    if opts["--json"]:
        import json

        sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _print_error(message: str, hint: str | None) -> None:
    sys.stderr.write(f"opsdb: error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()


_LOGGING: dict[str, Any] = {}


def _setup_logging(opts: dict[str, Any] | None = None) -> None:
    """Only where work runs in this process (importing logging costs a few ms per WAL file)."""
    import logging

    opts = opts or _LOGGING or {"--debug": False}

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("opsdb: %(message)s"))
    root = logging.getLogger("opsdb")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if opts["--debug"] else logging.INFO)
    root.propagate = False


# --- the commands -------------------------------------------------------------------------------


def _routing(config: str | None, cluster: str | None) -> Routing | None:
    """The routing keys; None (in-process) also when root calls for a cluster run by another user."""
    routing = read_routing(config, cluster)
    if routing is not None and routing.helpers_of_another_user():
        return None
    return routing


def wal_push(config: str | None, cluster: str | None, path: str) -> dict[str, Any]:
    routing = _routing(config, cluster)
    name = os.path.basename(path)
    async_ = routing is not None and routing.async_
    request = ["push", os.path.abspath(path), "async" if async_ else "sync"]
    reply = _via_helper(routing, request, PUSH_WAIT_SECONDS)
    if reply is not None:
        ahead = reply.get("ahead") == "1"
        already = reply.get("already_stored") == "1"
        return {
            "name": name,
            "stored": True,
            "mode": "async" if async_ else "sync",
            "already_stored": already,
            "pushed_ahead": ahead,
        }
    from opsdb.ops.wal import push_fetch as ops_wal

    _setup_logging()
    result = ops_wal.push_file(_wal_repo(config, cluster, writable=True), path)
    mode = "async" if async_ else "sync"
    return {"name": name, "stored": True, "mode": mode, "already_stored": result.already_stored, "pushed_ahead": False}


def wal_fetch(config: str | None, cluster: str | None, name: str, dest: str) -> dict[str, Any]:
    routing = _routing(config, cluster)
    reply = _via_helper(routing, ["fetch", name, os.path.abspath(dest), os.getcwd()], FETCH_WAIT_SECONDS)
    if reply is not None:
        size = int(reply.get("size") or 0)
        source = reply.get("source", "repository")
        # waited_ms: how long the helper waited for this segment, still being fetched ahead (0: it was ready)
        return {
            "name": name,
            "fetched": True,
            "source": source,
            "size": size,
            "waited_ms": int(reply.get("waited_ms") or 0),
        }
    from opsdb.ops.wal import push_fetch as ops_wal

    _setup_logging()
    result = ops_wal.fetch_file(_wal_repo(config, cluster, writable=False), name, dest)
    return {"name": name, "fetched": True, "source": result.source, "size": result.size}


def _via_helper(routing: Routing | None, request: list[str], timeout: float) -> dict[str, str] | None:
    """The helper's successful reply (its key=value fields); None when no helper can serve this call
    (then it works in-process). An error reply is raised as the error the in-process path would raise."""
    if routing is None:
        return None
    from opsdb.ops.wal import spool as walspool

    paths = walspool.Paths(routing.spool_dir, routing.cluster or "", routing.config_path)
    reply = walspool.call(paths, request, _starter(routing, paths.log), timeout=timeout, warn=_warn_spool)
    if reply is None:
        return None
    if reply[0] == "error":
        walspool.raise_error(reply)
    values = walspool.reply_values(reply)
    if values.get("warning"):
        _warn(values["warning"])
    return values


def _warn(message: str) -> None:
    sys.stderr.write(f"opsdb: warning: {message}\n")
    sys.stderr.flush()


def _warn_spool(message: str) -> None:
    # archive_command's stderr lands in PostgreSQL's log: one line per call until the spool is fixed
    sys.stderr.write(f"opsdb: warning: {message}\n")
    sys.stderr.write("hint: make [wal] spool_dir writable by the OS user PostgreSQL runs as (it is created 0700)\n")
    sys.stderr.flush()


def _starter(routing: Routing, log_path: str) -> Any:
    """A function that starts the helper detached from this call and says whether it lives."""

    def start() -> Any:
        from opsdb.ops.wal import spool as walspool

        # `python -I -m` as proc.python_module builds it: neither the working directory nor PYTHON*
        # variables nor the user's site-packages are on its path
        argv = [sys.executable, "-I", "-m", "opsdb.cli.fastpath"]
        if routing.config_path:
            argv += ["--config", routing.config_path]
        argv += ["--cluster", routing.cluster or "", "wal-helper"]
        # glibc gives each thread its own malloc arena and keeps what they freed: two arenas cap the
        # helper's resident memory (its push, prefetch and connection threads) at no measurable cost
        return walspool.start_detached(argv, HELPER_ENV, log_path)

    return start


def _wal_repo(config: str | None, cluster: str | None, *, writable: bool) -> Any:
    """The cluster's WAL repository from the validated settings (the one full config load)."""
    from opsdb.config import load_settings
    from opsdb.ops.wal.push_fetch import wal_repo_from_settings

    settings = load_settings(config)
    name, _ = settings.cluster(cluster)
    return wal_repo_from_settings(settings, name, writable=writable)


def run_helper(opts: dict[str, Any]) -> int:
    """The WAL helper process (ops/wal/helper.py): validated settings and one storage client, then serve
    until idle. A start-up failure ends it (its log says why); the waiting call then works in-process."""
    from opsdb.ops.wal import helper as walhelper
    from opsdb.ops.wal import spool as walspool

    _setup_logging(opts)
    routing = read_routing(opts.get("--config"), opts.get("--cluster"))
    if routing is None:
        _print_error("the WAL helper cannot read its configuration", None)
        return 2
    paths = walspool.Paths(routing.spool_dir, routing.cluster or "", routing.config_path)
    return walhelper.run(opts.get("--config"), routing.cluster, paths)


if __name__ == "__main__":
    main()
