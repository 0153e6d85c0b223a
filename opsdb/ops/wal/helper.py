"""The WAL helper: one background process per cluster and configuration that serves wal-push and
wal-fetch calls, pushes `.ready` files ahead (`[wal] async`) and fetches segments ahead (`[wal] prefetch`).

PostgreSQL runs archive_command and restore_command once per WAL file, serially. A Python call that
does the work itself pays for importing pydantic and boto3 and building a storage client every time;
with the helper, a call is an interpreter start plus one Unix-socket round trip (ops/wal/spool.py says
what is exchanged), and the helper keeps the validated settings, keys and storage client loaded.
Semantics do not change: a push is answered only once the file is durably stored (or was stored
ahead by this helper with the same content), a fetch only once DEST was written and authenticated.

- Started on demand by the first call that finds none (detached, its own session), and exits after
  IDLE_EXIT seconds without a request or background work, removing its socket first.
- Serves only its own uid (SO_PEERCRED); another caller (root) is answered "foreign" and works in-process.
- Never stale: before it stores or fetches anything more it compares the config file and every key
  file by content with what it loaded (Follow). A changed config: it answers "restart", lets running
  work finish and exits, and the caller starts a helper with the new settings; what it stored ahead
  lives only in its memory, so nothing stored under old settings is acknowledged by a successor. A
  changed key: it loads the keys again in place and goes on with them.
- kill -9 at any point leaves nothing that looks complete: stores are create-only (temp + rename, or
  one PUT), a fetched file is renamed into DEST only when whole and authenticated, and prefetched files
  are served only by the helper that published them (a successor starts from an empty window).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from opsdb.errors import OperationFailed, OpsdbError, UsageError
from opsdb.ops.wal import settings as walsettings
from opsdb.ops.wal import spool as walspool
from opsdb.ops.wal.ahead import Prefetch, Pusher
from opsdb.ops.wal.push_fetch import WalRepo, wal_repo_from_settings
from opsdb.ops.wal.settings import WalSettings

log = logging.getLogger("opsdb.wal")

IDLE_EXIT = 60.0  # seconds without a request (and no background work) before the helper exits
START_WAIT = 20.0  # how long a successor waits for a leaving helper's lock
WORKERS = 8  # calls served at once (the archiver, a restore, a standby)
# set in a helper that started again from its kept settings (neither OPSDB_ nor AWS_: not in its digest)
RESTARTED_ENV = "WAL_HELPER_STARTED_AGAIN"


class Helper:
    """What the helper does with one request: exactly the in-process call's work, plus work ahead."""

    def __init__(self, pusher: Pusher, prefetch: Prefetch, stale: Callable[[], bool]) -> None:
        self.pusher, self.prefetch, self.stale = pusher, prefetch, stale

    def busy(self) -> bool:
        return self.pusher.busy() or self.prefetch.busy()

    def handle(self, request: list[str]) -> list[str]:
        try:
            if request[0] == "push" and len(request) >= 2:
                result, ahead = self.pusher.push(request[1], async_=request[2:3] == ["async"])
                return walspool.ok_reply(already_stored=int(result.already_stored), ahead=int(ahead), size=result.size)
            if request[0] == "fetch" and len(request) == 4:
                fetched = self.prefetch.fetch(request[1], request[2], request[3] or None)
                return walspool.ok_reply(
                    size=fetched.size, source=fetched.source, warning=fetched.warning, waited_ms=fetched.waited_ms
                )
            raise UsageError(f"the WAL helper does not understand {request[0]!r}")
        except OpsdbError as exc:
            return walspool.error_reply(exc)
        except OSError as exc:  # the caller's path (DEST unwritable, %p unreadable): its error, with the path
            return walspool.error_reply(OperationFailed(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")))


def serve(
    paths: walspool.Paths,
    helper: Helper,
    *,
    idle_exit: float = IDLE_EXIT,
    workers: int = WORKERS,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Answer calls on paths.sock until idle or stale. Returns the number of requests served (0 when
    another helper serves). A leaving helper removes its socket first and may still finish work while
    holding the lock: its successor waits for the lock rather than giving up."""
    os.makedirs(paths.directory, mode=0o700, exist_ok=True)
    deadline = clock() + START_WAIT
    lock = walspool.DaemonLock(paths.lock)
    while True:
        fd = lock.acquire()
        if fd is not None:
            try:
                return _serve_locked(paths.sock, helper, idle_exit, workers, clock)
            finally:
                os.close(fd)
        if _listening(paths.sock) or clock() > deadline:
            return 0  # another helper serves this socket
        time.sleep(0.05)


def _listening(sock: str) -> bool:
    """Whether a helper accepts connections on sock (a leaving one's socket may linger a moment)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(1.0)
        with walspool.Address(sock) as address:
            conn.connect(address)
        return True
    except OSError:
        return False
    finally:
        conn.close()


def _serve_locked(sock: str, helper: Helper, idle_exit: float, workers: int, clock: Callable[[], float]) -> int:
    served = 0
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)  # a dead helper's socket: the lock says nobody serves it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        with walspool.Address(sock) as address:
            listener.bind(address)
    finally:
        os.umask(old_umask)
    bound = os.stat(sock).st_ino
    listener.listen(64)
    listener.settimeout(0.5)
    last_request = clock()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wal-helper") as pool:
            while True:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if helper.busy():
                        last_request = clock()
                    if clock() - last_request > idle_exit or helper.stale():
                        break
                    continue
                last_request = clock()
                if helper.stale():
                    # the socket goes first: a successor started on this reply must not find it and step aside
                    _unlink_if_ours(sock, bound)
                    with contextlib.suppress(OSError):
                        conn.sendall(walspool.pack(["restart"]))
                    conn.close()
                    log.info("the configuration or a key changed: the helper exits (a new one takes over)")
                    break
                pool.submit(_serve_one, conn, helper)
                served += 1
            # stop taking calls before running work drains, so late callers start a fresh helper at once
            _unlink_if_ours(sock, bound)
            listener.close()
            helper.pusher.close()
            helper.prefetch.close()
    finally:
        _unlink_if_ours(sock, bound)
        listener.close()
    return served


def _unlink_if_ours(sock: str, inode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.stat(sock).st_ino == inode:
            os.unlink(sock)


def _serve_one(conn: socket.socket, helper: Helper) -> None:
    with conn:
        try:
            conn.settimeout(30.0)
            request = walspool.unpack(walspool.read_line(conn))  # read first: closing on unread data resets
            if not peer_is_own_user(conn):
                # another uid (root too): its paths must be opened with its own rights, so it works in-process
                conn.sendall(walspool.pack(["foreign"]))
                return
            conn.settimeout(None)  # a push or fetch takes as long as the repository takes
        except OSError:
            return  # a broken client: nothing to answer
        try:
            reply = helper.handle(request)
        except Exception as exc:  # a bug must fail this one request, not the helper
            log.exception("internal error serving %s", request[:1])
            reply = walspool.error_reply(
                OperationFailed(f"internal error in the WAL helper: {type(exc).__name__}: {exc}")
            )
        with contextlib.suppress(OSError):
            conn.sendall(walspool.pack(reply))


def peer_is_own_user(conn: socket.socket) -> bool:
    """Only the helper's own user: it opens the caller's paths with its own rights, which are another
    caller's (root's) rights neither more nor less. The spool directory's mode (0700) says so too."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


def _contents(paths: list[str]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for p in paths:
        try:
            with open(p, "rb") as fh:
                out.append(fh.read())
        except OSError:
            out.append(None)
    return out


class Follow:
    """The helper's settings, followed by the content of the config file and every key file (a
    rotated key is seen even when rewritten in place with the same size and mtime).

    Called (as stale()) before each call is served and before each push or fetch ahead begins:
    - the config changed (a moved repository, other settings): True, and stays True; the helper
      starts nothing new and leaves, and its successor loads the new settings;
    - only a key file changed: the keys are loaded again in place, and everything that begins from
      now on uses them (uploads already running finish with the old key). The keys loaded before stay
      readable, so a file this helper stored ahead under the old key is still acknowledged, and a
      re-push of one can still be compared with what is stored;
    - the new keys cannot be loaded: True (the in-process path reports why)."""

    def __init__(self, config: str | None, cluster: str | None, directory: str) -> None:
        self.config, self.cluster, self.directory = config, cluster, directory
        self.lock = threading.Lock()
        self.left = False
        self.users: list[Pusher | Prefetch] = []  # what holds the repository (its .repo is replaced on a key change)
        self.config_seen: list[bytes | None] = []
        self.keys: list[str] = []
        self.keys_seen: list[bytes | None] = []

    def load(self) -> tuple[WalSettings, WalRepo]:
        """(settings, WAL repository): read the files first, so a change while loading is seen too.
        The validated settings come from the helper directory's entry for this very config when
        there is one (ops/wal/settings.py: no config models imported), else from opsdb.config."""
        self.config_seen = _contents([self.config] if self.config else [])
        settings = walsettings.load(self.config, self.cluster, self.directory)
        self.keys = settings.repository.key_files()
        self.keys_seen = _contents(self.keys)
        return settings, wal_repo_from_settings(settings.repository, settings.cluster, writable=True)

    def __call__(self) -> bool:
        with self.lock:
            if self.left:
                return True
            if _contents([self.config] if self.config else []) != self.config_seen:
                self.left = True
                return True
            if _contents(self.keys) != self.keys_seen:
                try:
                    _, repo = self.load()
                except OpsdbError as exc:
                    log.warning("the keys changed and cannot be loaded: %s", exc)
                    self.left = True
                    return True
                for user in self.users:
                    keys = {**user.repo.keys, **repo.keys}  # the new write key; old ones still read
                    user.repo = dataclasses.replace(repo, keys=keys)
                log.info("a key file changed: what begins from now on uses the keys loaded again")
            return False


def _start_again_from_kept_settings(config: str | None, cluster: str | None, paths: walspool.Paths) -> None:
    """A helper that validated its config (nothing was kept for it yet) holds pydantic and the config
    models, ~12 MB for as long as it serves: once the settings are kept, it starts again from them
    (exec: the same pid, before it takes the lock or the socket). Once: the environment says so."""
    if "opsdb.config" not in sys.modules or os.environ.get(RESTARTED_ENV) or "wal-helper" not in sys.orig_argv:
        return  # loaded from kept settings, started again already, or not the helper process
    if not walsettings.kept(config, cluster, paths.directory):
        return  # nothing could be kept (a full spool): serve with what is loaded
    os.environ[RESTARTED_ENV] = "1"
    logging.shutdown()  # flush the log before the process image is replaced
    os.execv(sys.executable, sys.orig_argv)


def run(config: str | None, cluster: str | None, paths: walspool.Paths) -> int:
    """The helper process: load and validate the settings, follow their files, serve until idle.
    A start-up failure ends it (its log says why); the waiting call then works in-process and reports it."""
    follow = Follow(config, cluster, paths.directory)
    try:
        settings, repo = follow.load()
    except OpsdbError as exc:
        log.error("the WAL helper cannot start: %s", exc)
        return 2 if isinstance(exc, UsageError) else 1
    _start_again_from_kept_settings(config, cluster, paths)
    workers = settings.push_workers
    pusher = Pusher(repo, workers=workers, stale=follow)
    prefetch = Prefetch(repo, paths, settings.repository.url, depth=settings.prefetch, workers=workers, stale=follow)
    follow.users = [pusher, prefetch]
    served = serve(paths, Helper(pusher, prefetch, follow))
    log.info("the WAL helper served %d calls and exits", served)
    return 0
