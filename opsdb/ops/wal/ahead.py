"""The WAL helper's two kinds of work: pushes (with push-ahead of `.ready` files when `[wal] async`)
and fetches (with prefetch of the next segments when `[wal] prefetch` > 0).

Push-ahead: a push call in async mode makes the helper store every file PostgreSQL has marked
`.ready` in that pg_wal, `push_workers` at a time, and keep going while `.ready` files remain. What
it stored ahead is remembered in memory only (name and the file's identity), so a later call for
that name is answered at once, but only for the very same file (same device, inode, size and mtime,
unchanged while it was read); anything else is pushed again (create-only: an identical stored object
is then read back and compared, a different one is a conflict).

Prefetch: a fetch call for NAME makes the helper fetch the next `prefetch` segments of the same
timeline into `spool_dir/<cluster>/prefetch/<key>/` (authenticated and checked against the restoring
server's pg_control before they are published there by rename), and a later call is served by
renaming the published file into DEST: nothing is hashed twice. A published file is served only when
it is still the very file this helper published (same identity); otherwise it is dropped and the
segment is fetched directly. A spool that cannot hold a segment makes that call fetch directly, with
a warning naming the path (the call prints it in PostgreSQL's log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from opsdb.errors import UsageError
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, parse_wal_name, segment_name
from opsdb.ops.wal import spool as walspool
from opsdb.ops.wal.push_fetch import WalRepo, fetch_checked, fetch_file, push_file
from opsdb.repo import wal as repo_wal

log = logging.getLogger("opsdb.wal")

REMEMBERED_MAX = 4096  # names pushed and acknowledged, kept so a lingering .ready is not pushed twice
READ_CHUNK = 1024 * 1024


class _Stale(Exception):
    """The settings changed before this work began: it does not begin."""


def file_identity(path: str) -> str | None:
    """device:inode:size:mtime_ns of a file: the same file, unchanged, has the same identity."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def ready_files(wal_dir: str) -> list[str]:
    """Names PostgreSQL has marked ready for archiving in wal_dir, history files first (as it does)."""
    try:
        entries = os.scandir(os.path.join(wal_dir, "archive_status"))
        names = [e.name[: -len(".ready")] for e in entries if e.name.endswith(".ready")]
    except OSError:
        return []
    valid = []
    for name in names:
        with contextlib.suppress(UsageError):
            repo_wal.check_name(name)
            valid.append(name)
    return sorted(valid, key=lambda n: (not n.endswith(".history"), n))


def next_names(name: str, depth: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[str]:
    """The segments recovery will most likely ask for after NAME (same timeline, in order)."""
    wal = parse_wal_name(name, segment_size)
    if wal.kind != "segment" or wal.segno is None:
        return []
    return [segment_name(wal.timeline, wal.segno + i, segment_size) for i in range(1, depth + 1)]


@dataclasses.dataclass(frozen=True)
class _Ahead:
    result: repo_wal.PushResult
    identity: str | None  # the file read, when it did not change while it was read


class Pusher:
    def __init__(self, repo: WalRepo, *, workers: int, stale: Callable[[], bool]) -> None:
        self.repo, self.workers, self.stale = repo, workers, stale
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wal-push-ahead")
        self.lock = threading.RLock()  # a done-callback may run in the thread that submitted
        self.in_flight: dict[str, Future[_Ahead]] = {}
        self.ahead: dict[str, _Ahead] = {}
        self.acknowledged: set[str] = set()
        self.failed: set[str] = set()  # not retried ahead until the next call
        self.closed = False

    def busy(self) -> bool:
        with self.lock:
            return bool(self.in_flight)

    def push(self, path: str, *, async_: bool) -> tuple[repo_wal.PushResult, bool]:
        """Store the file at path (archive_command's %p, absolute); (result, stored ahead)."""
        name = os.path.basename(path)
        repo_wal.check_name(name)
        if not os.path.isfile(path):
            raise UsageError(f"unable to archive {path}: no such file", hint="archive_command must pass %p")
        if async_:
            with self.lock:
                self.failed.clear()
            self.scan(os.path.dirname(path))
        with self.lock:
            future = self.in_flight.get(name)
        if future is not None:
            with contextlib.suppress(Exception):  # a failure ahead: the push below reports it properly
                future.result()
        with self.lock:
            ahead = self.ahead.pop(name, None)
            if len(self.acknowledged) > REMEMBERED_MAX:
                self.acknowledged.clear()
            self.acknowledged.add(name)
        if ahead is not None and _same_file(ahead, path):
            return ahead.result, True
        return push_file(self.repo, path), False

    def scan(self, wal_dir: str) -> None:
        """Start pushing the .ready files of wal_dir that nobody pushed yet (at most 2 x workers queued)."""
        names = ready_files(wal_dir)
        with self.lock:
            if self.closed or not names or self.stale():
                return
            for name in names:
                if len(self.in_flight) >= self.workers * 2:
                    break
                if name in self.in_flight or name in self.ahead or name in self.acknowledged or name in self.failed:
                    continue
                future = self.pool.submit(self._push_ahead, os.path.join(wal_dir, name))
                self.in_flight[name] = future
                future.add_done_callback(functools.partial(self._finished, name, wal_dir))

    def _push_ahead(self, path: str) -> _Ahead:
        if self.stale():  # asked in the worker: a push waiting for a free worker never starts under old settings
            raise _Stale(path)
        before = file_identity(path)
        result = push_file(self.repo, path)
        return _Ahead(result, before if before is not None and before == file_identity(path) else None)

    def _finished(self, name: str, wal_dir: str, future: Future[_Ahead]) -> None:
        with self.lock:
            self.in_flight.pop(name, None)
            try:
                self.ahead[name] = future.result()
            except _Stale:
                return
            except Exception as exc:
                self.failed.add(name)
                log.warning("storing %s ahead failed: %s", name, exc)
                return
        self.scan(wal_dir)  # keep going while PostgreSQL has .ready files

    def close(self) -> None:
        with self.lock:
            self.closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)


def _same_file(ahead: _Ahead, path: str) -> bool:
    """Whether what was stored ahead is the very same file at path (unchanged since it was read).
    Anything else is pushed again: the create-only store then compares the content it holds."""
    return ahead.identity is not None and ahead.identity == file_identity(path)


@dataclasses.dataclass(frozen=True)
class Fetched:
    size: int
    source: str  # "prefetch" or "repository"
    warning: str | None = None
    waited_ms: int = 0  # how long the call waited for its segment, still being fetched ahead


class _Window:
    """What is fetched ahead for one recovery (one data directory)."""

    def __init__(self, directory: str, data_dir: str) -> None:
        self.directory, self.data_dir = directory, data_dir
        self.asked: str | None = None  # what recovery asks for now (a call may be waiting for it)
        self.names: list[str] = []  # what recovery will ask for next
        self.published: dict[str, tuple[str | None, int]] = {}  # name -> (identity, size)
        self.in_flight: dict[str, Future[int]] = {}
        self.failed: dict[str, BaseException] = {}
        self.parallel = 1  # downloads at once: Prefetch._pace sizes it to keep ahead of recovery


class Prefetch:
    def __init__(
        self,
        repo: WalRepo,
        paths: walspool.Paths,
        repository: str,
        *,
        depth: int,
        workers: int,
        stale: Callable[[], bool],
    ) -> None:
        self.repo, self.paths, self.repository, self.depth, self.stale = repo, paths, repository, depth, stale
        # at most this many downloads at once per recovery (a slow or distant repository needs several
        # to keep ahead); each window starts with one and grows only while recovery waits (_pace)
        self.workers = max(1, min(depth, max(workers, 4)))
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="wal-prefetch")
        self.lock = threading.RLock()
        self.windows: dict[str, _Window] = {}
        self.closed = False

    def busy(self) -> bool:
        with self.lock:
            return any(w.in_flight for w in self.windows.values())

    def fetch(self, name: str, dest: str, data_dir: str | None) -> Fetched:
        """restore_command's work: NAME into dest (absolute), from what was fetched ahead when it can."""
        repo_wal.check_name(name)
        if self.depth <= 0 or data_dir is None:
            return Fetched(fetch_file(self.repo, name, dest).size, "repository")
        window, warning = self._window(data_dir, name)
        if window is None:
            return Fetched(fetch_file(self.repo, name, dest).size, "repository", warning)
        with self.lock:
            future = window.in_flight.get(name)
            self._pace(window, ready=name in window.published)
            self._advance(window, name)
        waited_ms = 0
        if future is not None:
            began = time.monotonic()
            with contextlib.suppress(Exception):  # a failure ahead: the direct fetch below reports it properly
                future.result()
            waited_ms = round((time.monotonic() - began) * 1000)
        with self.lock:
            published = window.published.pop(name, None)
            failure = window.failed.pop(name, None)
        if published is not None and self._serve(window, name, published, dest):
            return Fetched(published[1], "prefetch", waited_ms=waited_ms)
        if isinstance(failure, OSError):  # the spool cannot hold it (full): not a repository problem
            warning = (
                f"the prefetch spool cannot hold {name}: {failure.strerror or failure} ({window.directory}); "
                f"fetching {name} directly from the repository"
            )
        return Fetched(fetch_file(self.repo, name, dest).size, "repository", warning, waited_ms)

    def _window(self, data_dir: str, name: str) -> tuple[_Window | None, str | None]:
        key = os.path.realpath(data_dir)
        with self.lock:
            window = self.windows.get(key)
            if window is not None:
                return window, None
            directory = self.paths.prefetch_dir(data_dir, self.repository)
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as exc:
                return None, (
                    f"the prefetch spool cannot be used: {exc.strerror or exc} ({exc.filename or directory});"
                    f" fetching {name} directly from the repository"
                )
            window = _Window(directory, data_dir)
            for entry in os.scandir(directory):  # a dead helper's files: never served, whatever they hold
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            self.windows[key] = window
            return window, None

    def _pace(self, window: _Window, *, ready: bool) -> None:
        """Size the window's downloads at once to keep ahead of recovery: one more (up to `workers`)
        each time recovery asks for a segment not yet published, one fewer while more than half the
        window is published ahead. On two cores every download beyond what keeps ahead only takes CPU
        from PostgreSQL's replay (and makes the segment it needs next arrive later); against a distant
        repository downloads wait on the network, and recovery's waits grow the window until it keeps ahead."""
        if not ready:
            window.parallel = min(self.workers, window.parallel + 1)
        elif len(window.published) > self.depth // 2:
            window.parallel = max(1, window.parallel - 1)

    def _advance(self, window: _Window, name: str) -> None:
        """Recovery asked for NAME: what it will ask for next is the window; the rest is dropped."""
        window.asked, window.names = name, next_names(name, self.depth)
        keep = {name, *window.names}
        for old in [n for n in window.published if n not in keep]:
            window.published.pop(old)
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(window.directory, old))
        window.failed = {n: e for n, e in window.failed.items() if n in keep}
        self._fill(window)

    def _fill(self, window: _Window) -> None:
        if self.closed or self.stale():
            return
        for ahead in window.names:
            if len(window.in_flight) >= window.parallel:
                break
            if ahead in window.in_flight or ahead in window.published or ahead in window.failed:
                continue
            future = self.pool.submit(self._fetch_ahead, window, ahead)
            window.in_flight[ahead] = future
            future.add_done_callback(functools.partial(self._finished, window, ahead))

    def _fetch_ahead(self, window: _Window, name: str) -> int:
        if self.stale():
            raise _Stale(name)
        final = os.path.join(window.directory, name)
        tmp = os.path.join(window.directory, f".{name}.{os.getpid()}.tmp")
        try:
            # written out here, ahead: PostgreSQL's own fsync of the segment then finds nothing to write
            size = fetch_checked(self.repo, name, tmp, window.data_dir, sync=True)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return size

    def _finished(self, window: _Window, name: str, future: Future[int]) -> None:
        with self.lock:
            window.in_flight.pop(name, None)
            try:
                size = future.result()
            except _Stale:
                return
            except Exception as exc:  # not archived (yet), unreadable, or no room: asked directly when needed
                window.failed[name] = exc
                return
            final = os.path.join(window.directory, name)
            if name == window.asked or name in window.names:  # the one asked for now: a call waits for it
                window.published[name] = (file_identity(final), size)
            else:  # recovery moved past it meanwhile
                with contextlib.suppress(OSError):
                    os.unlink(final)
            self._fill(window)

    def _serve(self, window: _Window, name: str, published: tuple[str | None, int], dest: str) -> bool:
        """Rename the published file into dest, only if it is still the very file this helper published
        (nothing but this user can change it, and then its identity changes); else drop it."""
        src = os.path.join(window.directory, name)
        if published[0] is None or file_identity(src) != published[0]:
            with contextlib.suppress(OSError):
                os.unlink(src)
            return False
        try:
            os.replace(src, dest)
            return True
        except OSError:  # another file system: copy it beside dest, then rename (dest is all-or-nothing)
            tmp = f"{dest}.opsdb.{os.getpid()}.tmp"
            try:
                shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o600)
                os.replace(tmp, dest)
                return True
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                return False
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(src)

    def close(self) -> None:
        with self.lock:
            self.closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)
