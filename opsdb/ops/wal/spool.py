"""The WAL helper's spool protocol: where the helper lives and what a call and the helper say.

One module for both sides (the per-file `opsdb wal-push` / `wal-fetch` call and the long-lived
helper, ops/wal/helper.py). Standard library only, and little of it: the call side runs once per
WAL file, where every import is paid per segment (`_socket`, not `socket`, saves the enum set-up).

Layout under `[wal] spool_dir`/<cluster>/ (every directory mode 0700, so only its owner connects):
    helper/helper-DIGEST.sock   the helper's listening socket (DIGEST: the config's identity)
    helper/helper-DIGEST.lock   flock held while the helper serves, with its pid; .log beside it
    prefetch/KEY/NAME           a segment the helper fetched ahead (KEY: data directory + repository)
    prefetch/KEY/.NAME.PID.tmp  one being fetched (never served: the helper serves only what it published)

Messages are one line each, fields separated by tabs (a backslash escapes tab, newline and itself):
    request  push PATH [async]         |  fetch NAME DEST DATA_DIR
    reply    ok key=value...           |  error TYPE MESSAGE HINT  |  restart  |  foreign
Plain text rather than JSON: importing json costs a few ms per WAL file.
"""

from __future__ import annotations

import os
import sys

DIGEST_ENV_PREFIXES = ("OPSDB_", "AWS_")
SUN_PATH_MAX = 107  # sockaddr_un.sun_path, less the terminating NUL
MESSAGE_MAX = 64 * 1024
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n"}

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~4 ms per WAL file at run time
    from collections.abc import Callable
    from typing import Any


class Paths:
    """Where the cluster's helper for one configuration lives."""

    def __init__(self, spool_dir: str, cluster: str, config_path: str | None) -> None:
        self.root = os.path.join(spool_dir, cluster)
        self.directory = os.path.join(self.root, "helper")
        base = os.path.join(self.directory, f"helper-{identity_digest(config_path)}")
        self.sock = base + ".sock"
        self.lock = base + ".lock"
        self.log = base + ".log"

    def prefetch_dir(self, data_dir: str, repository: str) -> str:
        """Prefetched segments of one recovery: keyed by the data directory and the repository, so
        two restores never share files."""
        key = small_sha256(f"{os.path.realpath(data_dir)}\0{repository}".encode())[:16]
        return os.path.join(self.root, "prefetch", key)


def identity_digest(config_path: str | None) -> str:
    """Everything the helper's settings come from (the config file's identity, the OPSDB_* and AWS_*
    environment, the interpreter and opsdb's version): a changed config or environment is served by a
    new helper, never by one holding stale settings (the helper also watches the files by content)."""
    from opsdb import __version__

    parts = [__version__, sys.executable, config_path or ""]
    if config_path:
        try:
            st = os.stat(config_path)
            parts.append(f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    parts += sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(DIGEST_ENV_PREFIXES))
    return small_sha256("\0".join(parts).encode())[:16]


def small_sha256(data: bytes) -> str:
    """SHA-256 of a few bytes without loading OpenSSL (hashlib's import costs ~6 ms per WAL file):
    CPython's own module (`_sha2` from 3.12, `_sha256` before), which typeshed does not describe."""
    try:
        digest: str = __import__("_sha2" if sys.version_info >= (3, 12) else "_sha256").sha256(data).hexdigest()
    except ImportError:  # an interpreter built without it
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
    return digest


# --- messages ------------------------------------------------------------------------------------


def pack(fields: list[str]) -> bytes:
    """One message line from its fields."""
    return ("\t".join("".join(_ESCAPES.get(c, c) for c in f) for f in fields) + "\n").encode()


def unpack(line: bytes) -> list[str]:
    """The fields of one message line (without its newline)."""
    text = line.decode(errors="replace").rstrip("\n")
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(_UNESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        if c == "\t":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    fields.append("".join(current))
    return fields


def ok_reply(**values: object) -> list[str]:
    return ["ok", *(f"{k}={v}" for k, v in values.items() if v is not None)]


def error_reply(exc: BaseException) -> list[str]:
    """An error as a reply: its type, message and hint cross the socket; the exit code does not (the
    caller maps the type with errors.exit_code, the one policy)."""
    hint = getattr(exc, "hint", None) or ""
    return ["error", type(exc).__name__, str(exc) or type(exc).__name__, hint]


def reply_values(reply: list[str]) -> dict[str, str]:
    """The key=value fields of an ok reply."""
    return dict(f.split("=", 1) for f in reply[1:] if "=" in f)


def raise_error(reply: list[str]) -> None:
    """Raise an error reply as the error the in-process path would have raised."""
    from opsdb import errors

    kind, message, hint = (reply[1:] + ["", "", ""])[:3]
    raise errors.by_name(kind)(message or "the WAL helper failed", hint=hint or None)


class Address:
    """sock as a sockaddr_un path: a Unix socket path is at most 107 bytes, so a deeper one is reached
    through its directory's descriptor (/proc/self/fd/N/NAME, Linux), which bind and connect follow."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.fd = -1

    def __enter__(self) -> bytes:
        raw = os.fsencode(self.sock)
        if len(raw) <= SUN_PATH_MAX:
            return raw
        self.fd = os.open(os.path.dirname(self.sock), os.O_PATH | os.O_DIRECTORY)
        return os.fsencode(f"/proc/self/fd/{self.fd}/{os.path.basename(self.sock)}")

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_line(conn: Any) -> bytes:
    """One message from a connection: up to its newline (bounded)."""
    data = b""
    while not data.endswith(b"\n") and len(data) <= MESSAGE_MAX:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class DaemonLock:
    """The flock the helper holds while it serves; callers and successors only test it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def held_by_other(self) -> bool:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops our lock if we got it
        return False

    def acquire(self) -> int | None:
        """The locked descriptor (keep it open while serving; the pid is written in), or None when
        another process holds the lock."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # a full spool: the lock holds all the same (only stop_helpers reads the pid)
        return fd


def stop_helpers(spool_dir: str) -> int:
    """SIGTERM every WAL helper serving under spool_dir; how many.

    For owners of a throwaway spool (the demo, tests): in normal operation helpers exit when idle."""
    import signal

    stopped = 0
    for cluster in _entries(spool_dir):
        directory = os.path.join(cluster, "helper")
        for lock in sorted(p for p in _entries(directory) if p.endswith(".lock")):
            if not DaemonLock(lock).held_by_other():
                continue
            try:
                with open(lock) as fh:
                    os.kill(int(fh.read().strip()), signal.SIGTERM)
                stopped += 1
            except (OSError, ValueError):
                continue
    return stopped


def clear_prefetch(spool_dir: str, cluster: str, data_dir: str, repository: str) -> None:
    """Forget what was prefetched for a recovery of data_dir (a new restore into it starts clean)."""
    directory = Paths(spool_dir, cluster, None).prefetch_dir(data_dir, repository)
    for path in _entries(directory):
        try:
            os.unlink(path)
        except OSError:
            continue


def _entries(directory: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(directory)]
    except OSError:
        return []


# --- the call side: one wal-push / wal-fetch -------------------------------------------------------


def start_detached(argv: list[str], env: dict[str, str], log_path: str) -> Callable[[], bool]:
    """Start argv (the helper) in its own session with `env` added to this environment, stdin from
    /dev/null, stdout and stderr appended to log_path; returns "is it still running?".

    os.posix_spawn rather than proc.LocalRunner.spawn: importing opsdb.proc (dataclasses, subprocess,
    pathlib, typing) cost ~30 ms of CPU here, paid by every first call after the helper went idle.
    Every descriptor of this process but 0-2 is close-on-exec (Python's default), so none leaks."""
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            {**os.environ, **env},
            file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)],
            setsid=True,
        )
    finally:
        os.close(log)
        os.close(null)

    def alive() -> bool:
        try:
            ended, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by an earlier look
            return False
        return ended == 0

    return alive


START_WAIT = 20.0  # how long a call waits for a helper it started before working in-process


class _Unreachable(Exception):
    """No helper listens there (yet), or it is leaving."""


class _Foreign(Exception):
    """The helper serves another user: this caller is served in-process."""


def call(paths: Paths, request: list[str], start: Any, *, timeout: float, warn: Any) -> list[str] | None:
    """The helper's reply to request, starting the helper when none answers; None: work in-process.

    `start()` starts the helper and returns "is it still alive?". A request the helper dropped (it was
    killed, or was leaving) is asked again of a fresh helper: both operations may be repeated safely
    (a push of the same content succeeds, a fetch rewrites DEST atomically)."""
    import time

    try:
        if os.stat(paths.directory).st_uid != os.geteuid():
            return None  # another user's helper: served in-process, as with no helper
    except OSError:
        pass  # missing: made below (or not, and then in-process with a warning)
    alive: Any = None
    lock: DaemonLock | None = None
    deadline = 0.0
    delay = 0.002
    while True:
        try:
            reply = _ask(paths.sock, request, timeout)
            if reply is not None:
                return reply
        except _Unreachable:
            pass
        except _Foreign:
            return None
        if alive is None:
            try:
                os.makedirs(paths.directory, mode=0o700, exist_ok=True)
                alive = start()
            except OSError as exc:  # no writable spool here: in-process, and say so (it is much slower)
                where = exc.filename or paths.directory
                warn(f"the WAL helper cannot run: {exc.strerror or exc} ({where}); working in-process, which is slower")
                return None
            lock = DaemonLock(paths.lock)
            deadline = time.monotonic() + START_WAIT
        elif not alive() and lock is not None and not lock.held_by_other():
            return None  # it could not start (its log says why); the in-process path reports the problem
        if time.monotonic() > deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 1.5, 0.01)  # a starting helper is found within 10 ms of listening


def _ask(sock: str, request: list[str], timeout: float) -> list[str] | None:
    """One request on one connection. _Unreachable: nobody listens; None: the helper dropped it."""
    import _socket

    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        try:
            with Address(sock) as address:
                conn.connect(address)
        except OSError as exc:  # missing, refused, or not ours to reach: start one, or work in-process
            raise _Unreachable from exc
        try:
            conn.sendall(pack(request))
            line = read_line(conn)
        except OSError:
            return None
    finally:
        conn.close()
    if not line.endswith(b"\n"):
        return None  # dropped mid-request
    reply = unpack(line)
    if reply[0] == "restart":
        raise _Unreachable  # the helper saw its settings change and is leaving: start a new one
    if reply[0] == "foreign":
        raise _Foreign
    return reply if reply[0] in ("ok", "error") else None
