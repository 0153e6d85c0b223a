"""The lean path for wal-push and wal-fetch: PostgreSQL runs them once per WAL file, serially.

Start-up cost is archiving throughput here, so this module avoids typer/rich (and, in async/prefetch mode,
pydantic and boto3 too): it parses the few global options itself and hands anything unusual (--help,
unknown options, other commands) to the Typer app. Validation is never duplicated: the only raw config
reads are the routing keys (cli/routing.py: [wal] agent/async/prefetch/spool_dir, repository.url, the
cluster name; cached per config); the real work always runs with the fully validated settings
(in-process, or in the background helper, which reports a bad config back through the spool).
Every import here is paid once per WAL file: only small parts of the standard library load with it.

In sync mode (the default) a call hands its one file to the cluster's WAL agent (ops/walagent.py), a
warm background process that keeps settings, keys and the storage client loaded; when no agent can
run, the call works in-process. Async mode and prefetch use the spool helpers (ops/walspool.py).

Entry point: `main()` (the console script points here; see docs/wal.md). The background helpers run as
`python -m opsdb.cli.fastpath [global options] wal-agent push|fetch | wal-pusher | wal-prefetcher --data-dir D`.
"""

from __future__ import annotations

import os
import sys

from opsdb.cli.routing import Routing, read_routing
from opsdb.errors import NotFound, OpsdbError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~4 ms per WAL file at run time
    from typing import Any

# exit codes of wal-fetch (SPEC; cli/app.py has the same mapping for the Typer path)
WAL_FETCH_MISSING_EXIT = 1
WAL_FETCH_UNREADABLE_EXIT = 128
PUSH_WAIT_SECONDS = 600.0  # how long one wal-push waits for the pusher before failing (PostgreSQL retries)
FETCH_WAIT_SECONDS = 120.0  # how long one wal-fetch waits for the prefetcher before fetching itself
COMMANDS = ("wal-push", "wal-fetch", "wal-agent", "wal-pusher", "wal-prefetcher")
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
        from opsdb.cli.app import main as full_main

        try:
            full_main(args)
        except SystemExit as exc:
            if argv is None:  # the console script or `python -m opsdb`: the process ends here
                end_process(exc.code)
            raise
        return
    sys.exit(code)


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
    """Run wal-push / wal-fetch (and the background helpers) without Typer; None: not handled here."""
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
        elif command == "wal-agent":
            return run_agent(rest[0] if rest else "", opts)
        elif command == "wal-pusher":
            return run_daemon("pusher", opts, None)
        else:
            data_dir = rest[1] if len(rest) == 2 and rest[0] == "--data-dir" else os.getcwd()
            return run_daemon("prefetcher", opts, data_dir)
    except OpsdbError as exc:
        code = exit_code_for(exc, command)
        if not (command == "wal-fetch" and code == WAL_FETCH_MISSING_EXIT):
            _print_error(str(exc), exc.hint)
        return code
    except KeyboardInterrupt:
        _print_error("interrupted", None)
        return 130
    except Exception as exc:  # a bug: one line; wal-fetch must still make recovery stop, not end early
        if opts["--debug"]:
            raise
        _print_error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", None)
        return WAL_FETCH_UNREADABLE_EXIT if command == "wal-fetch" else 1
    if opts["--json"]:
        import json

        sys.stdout.write(json.dumps(result) + "\n")
    return 0


def exit_code_for(exc: OpsdbError, command: str) -> int:
    """wal-fetch: only "not archived" may look like a normal miss to PostgreSQL. Anything else (repository
    unreachable, failed authentication, but also an unreadable config or key file) means this recovery
    cannot read the archive, and an exit below 126 would make PostgreSQL end recovery early, at the
    wrong point, and promote: so every other failure exits above 125 and recovery stops."""
    if command == "wal-fetch":
        if isinstance(exc, NotFound):
            return WAL_FETCH_MISSING_EXIT
        return WAL_FETCH_UNREADABLE_EXIT
    return exc.exit_code


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
    if routing is not None and routing.async_:
        from opsdb.ops.walspool import PushSpool, SpoolUnusable, push_via_spool, settings_fingerprint

        spool = PushSpool(routing.spool_dir, routing.cluster or "")
        if _spool_usable(spool):
            start = _starter(routing, "wal-pusher", spool.log_path)
            try:
                fingerprint = settings_fingerprint(routing.config_path)
                ahead = push_via_spool(spool, path, start, timeout=PUSH_WAIT_SECONDS, fingerprint=fingerprint)
                return {"name": name, "stored": True, "mode": "async", "pushed_ahead": ahead}
            except SpoolUnusable as exc:
                _warn(f"{exc}; pushing {name} in-process")
        routing = None  # the agent would need the same spool: in-process
    reply = _via_agent(routing, "push", {"op": "push", "path": os.path.abspath(path)}, PUSH_WAIT_SECONDS)
    if reply is not None:
        return {"name": name, "stored": True, "mode": "sync", "already_stored": bool(reply.get("already_stored"))}
    from opsdb.ops import wal as ops_wal

    _setup_logging()
    result = ops_wal.push_file(_wal_repo(config, cluster, writable=True), path)
    return {"name": name, "stored": True, "mode": "sync", "already_stored": result.already_stored}


def wal_fetch(config: str | None, cluster: str | None, name: str, dest: str) -> dict[str, Any]:
    routing = _routing(config, cluster)
    if routing is not None and routing.prefetch > 0:
        from opsdb.ops.walspool import FetchSpool, SpoolUnusable, fetch_via_spool

        spool = FetchSpool(routing.spool_dir, routing.cluster or "", os.getcwd(), routing.repository)
        if _spool_usable(spool):
            start = _starter(routing, "wal-prefetcher", spool.log_path, ["--data-dir", os.getcwd()])
            try:
                if fetch_via_spool(spool, name, dest, start, timeout=FETCH_WAIT_SECONDS):
                    return {"name": name, "fetched": True, "source": "prefetch"}
            except SpoolUnusable as exc:
                _warn(f"{exc}; fetching {name} directly from the repository")
                routing = None  # the agent's socket lives in the same spool: in-process
        else:
            routing = None  # the agent would need the same spool: in-process
    reply = _via_agent(
        routing, "fetch", {"op": "fetch", "name": name, "dest": os.path.abspath(dest)}, FETCH_WAIT_SECONDS
    )
    if reply is not None:
        return {"name": name, "fetched": True, "source": "repository", "size": reply.get("size")}
    from opsdb.ops import wal as ops_wal

    _setup_logging()
    result = ops_wal.fetch_file(_wal_repo(config, cluster, writable=False), name, dest)
    return {"name": name, "fetched": True, "source": result.source, "size": result.size}


def _via_agent(routing: Routing | None, kind: str, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """The WAL agent's successful reply; None when no agent can serve (the caller works in-process).
    An error reply is raised as the error the in-process path would have raised."""
    if routing is None or not routing.agent:
        return None
    from opsdb.ops import walagent

    sock = walagent.socket_path(routing.spool_dir, routing.cluster or "", kind, routing.config_path)
    start = _starter(routing, "wal-agent", walagent.sibling(sock, ".log"), [kind])
    reply = walagent.call(sock, request, start, timeout=timeout, warn=_warn_spool)
    if reply is not None and reply.get("status") != "ok":
        walagent.raise_reply(reply)
    return reply


def _spool_usable(spool: Any) -> bool:
    """Whether the async / prefetch spool can be made here; if not, warn (the call works in-process)."""
    try:
        spool.ensure()
    except OSError as exc:
        where = exc.filename or spool.root
        _warn_spool(
            f"the WAL spool cannot be used: {exc.strerror or exc} ({where}); working in-process, which is slower"
        )
        return False
    return True


def _warn(message: str) -> None:
    sys.stderr.write(f"opsdb: warning: {message}\n")
    sys.stderr.flush()


def _warn_spool(message: str) -> None:
    # archive_command's stderr lands in PostgreSQL's log: one line per call until the spool is fixed
    sys.stderr.write(f"opsdb: warning: {message}\n")
    sys.stderr.write("hint: make [wal] spool_dir writable by the OS user PostgreSQL runs as (it is created 0700)\n")
    sys.stderr.flush()


def _starter(routing: Routing, command: str, log_path: str, extra: list[str] | None = None) -> Any:
    """A function that starts a background helper detached from this call and says whether it lives."""

    def start() -> Any:
        from opsdb.proc import Cmd, LocalRunner, python_module

        argv = list(python_module("opsdb.cli.fastpath"))
        if routing.config_path:
            argv += ["--config", routing.config_path]
        argv += ["--cluster", routing.cluster or "", command, *(extra or [])]
        os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
        handle = LocalRunner().spawn(Cmd(tuple(argv)), log_path=log_path)
        return lambda: handle.poll() is None

    return start


def _wal_repo(config: str | None, cluster: str | None, *, writable: bool) -> Any:
    return _validated(config, cluster, writable=writable)[1]


def _validated(config: str | None, cluster: str | None, *, writable: bool) -> tuple[Any, Any]:
    """The validated settings and the WAL repository of the cluster (the one full config load)."""
    from opsdb.config import load_settings
    from opsdb.ops.wal import wal_repo_from_settings

    settings = load_settings(config)
    name, _ = settings.cluster(cluster)
    return settings, wal_repo_from_settings(settings, name, writable=writable)


def run_agent(kind: str, opts: dict[str, Any]) -> int:
    """The WAL agent (ops/walagent.py): validated settings and one storage client, then serve until idle.
    A start-up failure ends it (its log says why); the waiting call then works in-process and reports it."""
    from opsdb.ops import wal as ops_wal
    from opsdb.ops import walagent

    if kind not in ("push", "fetch"):
        _print_error(f"unknown WAL agent kind {kind!r}: expected push or fetch", None)
        return 2
    _setup_logging(opts)
    routing = read_routing(opts.get("--config"), opts.get("--cluster"))
    if routing is None:
        return 2
    sock = walagent.socket_path(routing.spool_dir, routing.cluster or "", kind, routing.config_path)
    stale = _watch(routing, opts)  # before loading: a change while it loads is seen too
    try:
        settings, repo = _validated(opts.get("--config"), opts.get("--cluster"), writable=kind == "push")
    except OpsdbError as exc:
        _print_error(str(exc), exc.hint)
        return exc.exit_code
    walagent.serve(sock, ops_wal.agent_handler(repo, kind), stale=stale)
    return 0


def _watch(routing: Routing, opts: dict[str, Any]) -> Any:
    """stale() over the config file and every key file it names (by content): a helper asks it
    before it stores anything more, and leaves when the settings it loaded are no longer the config's."""
    from opsdb.ops import walagent

    paths = [routing.config_path] if routing.config_path else []
    try:
        from opsdb.config import load_settings

        enc = load_settings(opts.get("--config")).encryption
        paths += [str(p) for p in (enc.key_file, *enc.read_key_files) if p]
    except OpsdbError:
        pass  # the load below reports it
    return walagent.files_changed(paths)


def run_daemon(kind: str, opts: dict[str, Any], data_dir: str | None) -> int:
    """The background pusher / prefetcher: validated settings, then the loop in ops/wal.py.
    A start-up failure (bad config, unreadable key) is written where the waiting wal-push/fetch reads it."""
    from opsdb.ops import wal as ops_wal
    from opsdb.ops.walspool import FetchSpool, PushSpool, atomic_write, settings_fingerprint

    _setup_logging(opts)
    routing = read_routing(opts.get("--config"), opts.get("--cluster"))
    if routing is None:
        return 2
    spool: Any
    if kind == "pusher":
        spool = PushSpool(routing.spool_dir, routing.cluster or "").ensure()
    else:
        spool = FetchSpool(routing.spool_dir, routing.cluster or "", data_dir or os.getcwd(), routing.repository)
        spool.ensure()
    stale = _watch(routing, opts)  # before loading: a change while it loads is seen too
    fingerprint = settings_fingerprint(routing.config_path)
    try:
        settings, repo = _validated(opts.get("--config"), opts.get("--cluster"), writable=kind == "pusher")
    except OpsdbError as exc:
        atomic_write(spool.fail_path, str(exc).encode())
        _print_error(str(exc), exc.hint)
        return exc.exit_code
    workers = settings.wal.push_workers
    if kind == "pusher":
        ops_wal.run_pusher(spool, ops_wal.pusher_push_one(repo), workers=workers, stale=stale, fingerprint=fingerprint)
    else:
        depth = max(1, settings.wal.prefetch)
        fetch_one = ops_wal.prefetch_fetch_one(repo, data_dir)
        ops_wal.run_prefetcher(spool, fetch_one, depth=depth, workers=min(workers, depth), stale=stale)
    return 0


if __name__ == "__main__":
    main()
