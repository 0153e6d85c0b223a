"""The WAL agent: one warm background process per cluster and config that serves wal-push / wal-fetch.

PostgreSQL runs archive_command and restore_command once per WAL file, serially. In Python, a call that
does the work itself pays for importing pydantic and boto3 and building an S3 client every time (about
0.25 s to file://, 0.5 s to S3 here), which caps archiving at two segments a second. With the agent,
a call is a Python start plus one Unix-socket round trip: the agent keeps the validated settings, the
keys and the storage client loaded and does exactly the one file it is asked for. Semantics do not
change: wal-push still returns 0 only once the file is durably stored, wal-fetch only once DEST is
written and authenticated.

The agent is an accelerator, never a requirement: whenever it cannot be reached or started (no
writable spool directory, a bad config, a crash), the call does the work
in-process exactly as before, so failures are reported the validated way.

Standard library only at import time, and only what a call needs (the agent side imports the rest
when it starts): this module runs on the per-WAL-file path. The agent's work
(`handle`) is passed in by cli/fastpath.py, which owns the imports of the real operations.

Layout under `[wal] spool_dir`/<cluster>/agent/ (mode 0700, so only the spool's owner can connect):
    KIND-DIGEST.sock    the listening socket (KIND: push or fetch; DIGEST: the config's identity)
    KIND-DIGEST.lock    flock held by the agent while it serves; .log beside it
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, pathlib and hashlib would cost ~14 ms per WAL file at run time
    from collections.abc import Callable, Iterator
    from typing import Any

    Handler = Callable[[dict[str, Any]], dict[str, Any]]
    StartAgent = Callable[[], Callable[[], bool]]  # starts the agent; returns "is it still alive?"

IDLE_EXIT = 60.0  # seconds without a request before the agent exits
START_WAIT = 20.0  # how long a call waits for a freshly started agent before working in-process
REQUEST_MAX = 64 * 1024
SUN_PATH_MAX = 107  # sockaddr_un.sun_path, less the terminating NUL
WORKERS = 8  # requests served at once (archiver, several restores, a standby)
_ENV_PREFIXES = ("OPSDB_", "AWS_")


def socket_path(spool_dir: str, cluster: str, kind: str, config_path: str | None) -> str:
    """Where the agent for this kind, cluster and configuration listens.

    The name carries a digest of everything the agent's settings come from (the config file's identity,
    the OPSDB_* and AWS_* environment, the interpreter and opsdb's version), so a changed config or
    environment is served by a new agent and never by one holding stale settings."""
    from opsdb import __version__

    identity: list[Any] = [kind, __version__, sys.executable, config_path]
    if config_path:
        with contextlib.suppress(OSError):
            st = os.stat(config_path)
            identity.append([st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns])
    identity.append(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    from opsdb.ops.walspool import small_sha256

    digest = small_sha256(json.dumps(identity).encode())[:16]
    return os.path.join(spool_dir, cluster, "agent", f"{kind}-{digest}.sock")


def sibling(sock: str, suffix: str) -> str:
    """The agent's lock or log file beside its socket."""
    sock = os.fspath(sock)
    return sock[: -len(".sock")] + suffix if sock.endswith(".sock") else sock + suffix


@contextlib.contextmanager
def _address(sock: str) -> Iterator[bytes]:
    """sock as a sockaddr_un path: a Unix socket path is at most 107 bytes, so a deeper one is reached
    through its directory's descriptor (/proc/self/fd/N/NAME, Linux), which bind and connect follow."""
    raw = os.fsencode(sock)
    if len(raw) <= SUN_PATH_MAX:
        yield raw
        return
    fd = os.open(os.path.dirname(sock), os.O_PATH | os.O_DIRECTORY)
    try:
        yield os.fsencode(f"/proc/self/fd/{fd}/{os.path.basename(sock)}")
    finally:
        os.close(fd)


# --- client side: one wal-push / wal-fetch call ----------------------------------------------------


class _Unreachable(Exception):
    """No agent listens there (yet)."""


class _Foreign(Exception):
    """The agent serves another user: this caller is served in-process."""


def _owned_by_another_user(directory: str) -> bool:
    try:
        return os.stat(directory).st_uid != os.geteuid()
    except OSError:  # missing or unreachable: making it fails or succeeds below, and says so
        return False


def call(
    sock: str,
    request: dict[str, Any],
    start: StartAgent,
    *,
    timeout: float,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """The agent's reply to request, starting the agent when none answers; None: do the work in-process.

    A reply is {"status": "ok", ...} or {"status": "error", "type", "message", "hint", "exit_code"}.
    A request the agent dropped (it was killed, or was leaving) is asked again of a fresh agent: both
    operations may be repeated safely (a push of the same content succeeds, a fetch rewrites DEST)."""
    sock = os.fspath(sock)
    if _owned_by_another_user(os.path.dirname(sock)):
        return None  # another user's helpers: served in-process, as with no helper
    alive: Callable[[], bool] | None = None
    lock: Any = None
    deadline = 0.0
    delay = 0.005
    while True:
        try:
            reply = _ask(sock, request, timeout)
            if reply is not None:
                return reply
        except _Unreachable:
            pass
        except _Foreign:
            return None
        if alive is None:
            try:
                os.makedirs(os.path.dirname(sock), mode=0o700, exist_ok=True)
                alive = start()
            except OSError as exc:  # no writable spool here: in-process, and say so (it is much slower)
                if warn is not None:
                    where = exc.filename or os.path.dirname(sock)
                    warn(
                        f"the WAL agent cannot run: {exc.strerror or exc} ({where}); working in-process, which is slower"
                    )
                return None
            from opsdb.ops.walspool import DaemonLock

            lock = DaemonLock(sibling(sock, ".lock"))
            deadline = time.monotonic() + START_WAIT
        elif not alive() and not lock.held_by_other():
            return None  # it could not start (its log says why); the in-process path reports the problem
        if time.monotonic() > deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def _ask(sock: str, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """One request on one connection. _Unreachable: nobody listens; None: the agent dropped it."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        try:
            with _address(sock) as address:
                conn.connect(address)
        except OSError as exc:  # missing, refused, or not ours to reach (permissions): start one or go in-process
            raise _Unreachable from exc
        try:
            conn.sendall(json.dumps(request).encode() + b"\n")
            reply = _read_line(conn)
        except OSError:
            return None
    finally:
        conn.close()
    try:
        doc = json.loads(reply)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("status") == "restart":
        raise _Unreachable  # the agent saw its settings change and is leaving: start a new one
    if doc.get("status") == "foreign":
        raise _Foreign
    return doc


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) <= REQUEST_MAX:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# --- agent side ---------------------------------------------------------------------------------


def serve(
    sock: str,
    handle: Handler,
    *,
    stale: Callable[[], bool] = lambda: False,
    idle_exit: float = IDLE_EXIT,
    workers: int = WORKERS,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Answer requests on sock until idle_exit seconds pass without one, or stale() says the settings
    behind this agent changed. Returns the number of requests served (0 when another agent serves).

    An agent that is leaving (idle, or stale) removes its socket first and may still finish a request
    while holding the lock: its successor waits for the lock rather than giving up."""
    from opsdb.ops.walspool import DaemonLock

    sock = os.fspath(sock)
    os.makedirs(os.path.dirname(sock), mode=0o700, exist_ok=True)
    deadline = clock() + START_WAIT
    while True:
        with DaemonLock(sibling(sock, ".lock")).hold() as mine:
            if mine:
                return _serve_locked(sock, handle, stale, idle_exit, workers, clock)
        if _listening(sock) or clock() > deadline:
            return 0  # another agent serves this socket
        time.sleep(0.05)


def _listening(sock: str) -> bool:
    """Whether an agent accepts connections on sock (a leaving one's socket may linger a moment)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(1.0)
        with _address(sock) as address:
            conn.connect(address)
        return True
    except OSError:
        return False
    finally:
        conn.close()


def _serve_locked(
    sock: str, handle: Handler, stale: Callable[[], bool], idle_exit: float, workers: int, clock: Callable[[], float]
) -> int:
    from concurrent.futures import ThreadPoolExecutor

    served = 0
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)  # a dead agent's socket: the lock says nobody serves it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        with _address(sock) as address:
            listener.bind(address)
    finally:
        os.umask(old_umask)
    bound = os.stat(sock).st_ino
    listener.listen(64)
    listener.settimeout(0.5)
    last_request = clock()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wal-agent") as pool:
            while True:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if clock() - last_request > idle_exit or stale():
                        break
                    continue
                last_request = clock()
                if stale():
                    # the socket goes first: a successor started on this reply must not find it and step aside
                    _unlink_if_ours(sock, bound)
                    with contextlib.suppress(OSError):
                        _reply(conn, {"status": "restart"})
                    conn.close()
                    break
                pool.submit(_serve_one, conn, handle)
                served += 1
            # stop taking requests before the pool drains, so late callers start a fresh agent at once
            _unlink_if_ours(sock, bound)
            listener.close()
    finally:
        _unlink_if_ours(sock, bound)
        listener.close()
    return served


def _unlink_if_ours(sock: str, inode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.stat(sock).st_ino == inode:
            os.unlink(sock)


def _serve_one(conn: socket.socket, handle: Handler) -> None:
    with conn:
        try:
            conn.settimeout(30.0)
            request = json.loads(_read_line(conn))  # read first: closing on unread data would reset the caller
            if not isinstance(request, dict):
                raise ValueError("not an object")
            if not _peer_is_trusted(conn):
                # another uid (root too): its paths must be opened with its own rights, so it works in-process
                _reply(conn, {"status": "foreign", "message": "the WAL agent serves only its own OS user"})
                return
        except (OSError, ValueError):
            return  # a broken client: nothing to answer
        try:
            reply = handle(request)
        except Exception as exc:  # a bug must fail this one request, not the agent
            reply = _error("OperationFailed", f"internal error in the WAL agent: {type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):
            _reply(conn, reply)


def _peer_is_trusted(conn: socket.socket) -> bool:
    """Only the agent's own user: it opens the caller's paths with its own rights, which are another
    caller's (root's) rights neither more nor less. The spool directory's mode (0700) says so too."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.getuid()


def _reply(conn: socket.socket, doc: dict[str, Any]) -> None:
    conn.sendall(json.dumps(doc).encode() + b"\n")


def _error(kind: str, message: str, hint: str | None = None, exit_code: int = 1) -> dict[str, Any]:
    return {"status": "error", "type": kind, "message": message, "hint": hint, "exit_code": exit_code}


def error_reply(exc: Exception) -> dict[str, Any]:
    """An OpsdbError as a reply (type, message, hint and exit code survive the socket)."""
    return _error(type(exc).__name__, str(exc), getattr(exc, "hint", None), int(getattr(exc, "exit_code", 1)))


def raise_reply(reply: dict[str, Any]) -> None:
    """Raise the agent's error reply as the error the in-process path would have raised."""
    from opsdb import errors

    cls = getattr(errors, str(reply.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.OpsdbError)) or cls is errors.ToolError:
        cls = errors.OperationFailed
    exc = cls(str(reply.get("message") or "the WAL agent failed"), hint=reply.get("hint"))
    if exc.exit_code != reply.get("exit_code") and isinstance(reply.get("exit_code"), int):
        exc.exit_code = reply["exit_code"]
    raise exc


def files_changed(paths: list[str]) -> Callable[[], bool]:
    """stale() for serve() and the background helpers: True once the content of any of paths (the
    config file, the key files) differs from when the helper loaded its settings (a moved repository,
    a rotated key, even one rewritten in place with the same size and mtime)."""

    def contents() -> list[bytes | None]:
        out: list[bytes | None] = []
        for p in paths:
            try:
                with open(p, "rb") as fh:
                    out.append(fh.read())
            except OSError:
                out.append(None)
        return out

    first = contents()
    return lambda: contents() != first
