"""wal-push and wal-fetch: the use cases, and the background pusher and prefetcher of async mode.

Errors are distinct on purpose (cli/app.py maps them for wal-fetch): NotFound -> 1 (not archived, quiet),
RepositoryUnavailable / IntegrityError -> above 125 (recovery must abort rather than end early).
NotFound is only answered once the cluster's marker (repo/marker.py) proved the repository and the
cluster are there; every fetched segment's page header is checked against its name before it is
handed to PostgreSQL, and every pushed segment's system identifier against the cluster's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from opsdb.errors import IntegrityError, NotFound, OpsdbError, RepositoryUnavailable, UsageError
from opsdb.model import walheader
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, parse_wal_name, segment_name
from opsdb.ops.walspool import FetchSpool, PushSpool, file_identity, ready_files
from opsdb.repo import layout, marker
from opsdb.repo import wal as repo_wal
from opsdb.storage.base import Storage

log = logging.getLogger("opsdb.wal")

FETCH_ATTEMPTS = 3
PUSHER_IDLE_EXIT = 30.0  # seconds without work before the background pusher exits
PREFETCH_IDLE_EXIT = 30.0
# A "not archived" answer trusts a proof of the repository at most this old: a one-shot wal-fetch
# read the marker a moment ago; a long-lived helper reads it again before answering a miss.
PROOF_TTL = 5.0


@dataclasses.dataclass
class ArchiveState:
    """What this process knows of the cluster's marker: read once, then reused (helpers live long)."""

    proof: marker.ArchiveProof | None = None
    proven_at: float = 0.0

    def prove(self, storage: Storage, cluster: str, *, max_age: float | None = None) -> marker.ArchiveProof:
        now = time.monotonic()
        if self.proof is None or (max_age is not None and now - self.proven_at > max_age):
            self.proof = marker.prove_archive(storage, cluster)
            self.proven_at = now
        return self.proof

    def forget(self) -> None:
        self.proof = None


@dataclasses.dataclass(frozen=True)
class WalRepo:
    """What every WAL operation needs: where, as which cluster, and how objects are written/read."""

    storage: Storage
    cluster: str
    codec: Any  # repo.envelope.Codec
    keys: Mapping[str, Any]  # key id -> EncryptionKey, for reading
    state: ArchiveState = dataclasses.field(default_factory=ArchiveState, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class FetchResult:
    name: str
    dest: str
    size: int
    sha256: str
    source: str  # "repository" or "prefetch"


def push_file(repo: WalRepo, path: str) -> repo_wal.PushResult:
    """Store the WAL file at path (as archive_command's %p); returns once it is durably stored."""
    name = os.path.basename(path)
    repo_wal.check_name(name)
    if not os.path.isfile(path):
        raise UsageError(f"unable to archive {path}: no such file", hint="archive_command must pass %p")
    return _push(repo, name, path)


def _push(repo: WalRepo, name: str, path: str) -> repo_wal.PushResult:
    """Check the file's system identifier against the cluster's marker (creating the marker on the
    cluster's first push), then store it."""
    sysid = _push_identity(repo, name, path)
    source = lambda: repo_wal.read_file(path)  # noqa: E731
    return repo_wal.push(repo.storage, repo.cluster, name, source, repo.codec, repo.keys, sysid)


def _push_identity(repo: WalRepo, name: str, path: str) -> str | None:
    """The system identifier the file is archived under. A segment names its cluster in its first
    page header (no connection needed) and must match the cluster's marker, created on the first
    push; a .history or .backup file names none and takes the marker's. The marker is read once per
    process; a mismatch reads it again first (an `opsdb reinit` meanwhile)."""
    sysid = _file_system_identifier(name, path)
    cached = repo.state.proof.marker if repo.state.proof is not None else None
    if sysid is None:
        if cached is None:
            cached = marker.read_cluster_marker(repo.storage, repo.cluster)
            if cached is None:
                return None  # nothing pushed yet: bound to its name only
            _remember(repo, cached)
        return cached.system_identifier
    if cached is not None and cached.system_identifier == str(sysid):
        return cached.system_identifier
    _remember(repo, marker.ensure_cluster_marker(repo.storage, repo.cluster, sysid, what=f"archive {name}"))
    return str(sysid)


def _remember(repo: WalRepo, found: marker.ClusterMarker) -> None:
    repo.state.proof = marker.ArchiveProof(found, f"cluster marker {layout.cluster_marker(repo.cluster)}")
    repo.state.proven_at = time.monotonic()


def _file_system_identifier(name: str, path: str) -> int | None:
    if parse_wal_name(name).kind not in ("segment", "partial"):
        return None
    with open(path, "rb") as fh:
        header = walheader.parse_segment_header(fh.read(walheader.LONG_HEADER_SIZE))
    if header is None:
        raise UsageError(f"unable to archive {path}: it does not start with a WAL segment header")
    return header.system_identifier


def fetch_to(repo: WalRepo, name: str, dest: str, system_identifiers: frozenset[int] = frozenset()) -> tuple[str, int]:
    """Fetch NAME into dest atomically (temp + rename); (sha256, size) of the plaintext.

    The temp file is renamed only after the whole object was read and authenticated, so dest never
    holds a partial or unauthenticated file. No fsync, on purpose: a restore_command's file needs none.
    PostgreSQL moves every restored file into pg_wal itself (KeepFileRestoredFromArchive) with
    durable_rename, which fsyncs it first; until then it is a temporary fetched again after a crash.
    Syncing 16 MiB per segment cost recovery several seconds per 200 segments here."""
    tmp = f"{dest}.opsdb.{os.getpid()}.{id(dest)}.tmp"
    sha = hashlib.sha256()
    size = 0
    try:
        # 0600 like PostgreSQL's own WAL files: a WAL file holds table data
        content = walheader.ContentCheck(name, layout.wal_object(repo.cluster, name), system_identifiers)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            bound_to = {str(s) for s in system_identifiers}
            for chunk in repo_wal.fetch(repo.storage, repo.cluster, name, repo.keys, bound_to):
                content.feed(chunk)
                fh.write(chunk)
                sha.update(chunk)
                size += len(chunk)
        content.finish()
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return sha.hexdigest(), size


def fetch_file(
    repo: WalRepo,
    name: str,
    dest: str,
    *,
    attempts: int = FETCH_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """restore_command: NotFound at once (not retried); transport and integrity failures retried, then raised."""
    repo_wal.check_name(name)
    last: OpsdbError | None = None
    for attempt in range(attempts):
        try:
            sha, size = fetch_checked(repo, name, dest, data_dir_of(dest))
            return FetchResult(name, dest, size, sha, "repository")
        except (NotFound, marker.RepositoryMissing):
            raise
        except (RepositoryUnavailable, IntegrityError) as exc:
            repo.state.forget()  # the next attempt reads the marker again (reinit, a remount)
            last = exc
            log.warning("fetching %s failed (attempt %d of %d): %s", name, attempt + 1, attempts, exc)
            if attempt + 1 < attempts:
                sleep(0.5 * 2**attempt)
        except OSError as exc:  # the destination cannot be written: recovery cannot go on either
            raise RepositoryUnavailable(f"unable to write {dest}: {exc.strerror}") from None
    assert last is not None
    raise last


def fetch_checked(repo: WalRepo, name: str, dest: str, data_dir: str | None) -> tuple[str, int]:
    """fetch_to, with the repository proven first: NotFound only when the cluster's marker (read at
    most PROOF_TTL ago) shows the repository and the cluster are there; RepositoryMissing otherwise.
    A segment's system identifier is checked against the marker's (or, in a repository written
    before markers, the restoring server's pg_control)."""
    proof = repo.state.prove(repo.storage, repo.cluster)
    # the restoring server's own identifier is exact (PostgreSQL compares with it too, but ends
    # recovery at a mismatch instead of failing); else the cluster's, current or retired
    own = control_system_identifier(data_dir) if data_dir is not None else None
    sysids = frozenset({own}) if own is not None else proof.system_identifiers
    try:
        return fetch_to(repo, name, dest, sysids)
    except NotFound:
        repo.state.prove(repo.storage, repo.cluster, max_age=PROOF_TTL)
        raise


def data_dir_of(dest: str) -> str | None:
    """The data directory of a restore_command's %p (pg_wal/RECOVERYXLOG), when it is one."""
    wal_dir = os.path.dirname(os.path.abspath(dest))
    return os.path.dirname(wal_dir) if os.path.basename(wal_dir) == "pg_wal" else None


def control_system_identifier(data_dir: str) -> int | None:
    try:
        with open(os.path.join(data_dir, "global", "pg_control"), "rb") as fh:
            return walheader.control_system_identifier(fh.read(8))
    except OSError:
        return None


def wal_repo_from_settings(settings: Any, cluster: str, *, writable: bool = False) -> WalRepo:
    """Storage (read-only with writable=False), codec and read keys from validated settings (ops/codec.py)."""
    from opsdb.ops.codec import repository

    repo = repository(settings, writable=writable)
    # single-threaded zstd for WAL: a 16 MiB file gains nothing from a worker pool started per object,
    # and async mode already compresses push_workers files at once
    codec = dataclasses.replace(repo.codec, threads=0)
    return WalRepo(repo.storage, cluster, codec, repo.keys)


def agent_handler(repo: WalRepo, kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What the WAL agent (ops/walagent.py) does with one request: exactly the in-process call's work."""
    from opsdb.ops.walagent import error_reply

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        try:
            if kind == "push" and request.get("op") == "push":
                pushed = push_file(repo, str(request["path"]))
                return {"status": "ok", "already_stored": pushed.already_stored, "size": pushed.size}
            if kind == "fetch" and request.get("op") == "fetch":
                fetched = fetch_file(repo, str(request["name"]), str(request["dest"]))
                return {"status": "ok", "size": fetched.size}
            raise UsageError(f"this WAL agent serves {kind} requests, not {request.get('op')!r}")
        except OpsdbError as exc:
            if not isinstance(exc, NotFound):
                log.warning("%s failed: %s", kind, exc)
            return error_reply(exc)

    return handle


# --- async push: the background pusher -----------------------------------------------------------


def run_pusher(
    spool: PushSpool,
    push_one: Callable[[str, str], repo_wal.PushResult],
    *,
    workers: int,
    idle_exit: float = PUSHER_IDLE_EXIT,
    clock: Callable[[], float] = time.monotonic,
    stale: Callable[[], bool] = lambda: False,
    fingerprint: str = "",
) -> int:
    """Store queued WAL files, and files PostgreSQL has marked .ready, in parallel; write an ok marker
    (fsynced) after each store returns. Exits after idle_exit seconds without work. Returns files stored.

    Before it starts storing anything more it asks stale(): once the config or a key file changed, it
    starts nothing new, lets what is in flight finish and exits; the waiting wal-push starts a pusher
    with the new settings. Markers carry `fingerprint` (walspool.settings_fingerprint at load)."""
    spool.ensure()
    stored = 0
    with spool.lock.hold() as mine:
        if not mine:
            return 0  # another pusher runs
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool.fail_path)
        spool.drop_old_markers()
        wal_dirs: set[str] = set()
        in_flight: dict[str, Future[tuple[repo_wal.PushResult, str | None]]] = {}
        requested: set[str] = set()
        # stored by this run: a .ready scan must not push them again (PostgreSQL may be recycling them)
        stored_names: set[str] = set()
        last_work = clock()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wal-push") as pool:
            while True:
                queued = spool.queued()
                requested |= set(queued)
                candidates = list(queued.items())
                for path in queued.values():
                    wal_dirs.add(os.path.dirname(path))
                for wal_dir in sorted(wal_dirs):
                    for name in ready_files(wal_dir):
                        if name not in stored_names:
                            candidates.append((name, os.path.join(wal_dir, name)))
                if candidates and stale():
                    candidates = []  # settings changed: nothing more under the old ones
                    if not in_flight:
                        log.info("the configuration or a key changed: the pusher exits (a new one takes over)")
                        return stored
                for name, path in candidates:
                    if len(in_flight) >= workers * 2:
                        break
                    if name in in_flight or (name not in queued and spool.has_ok(name)):
                        continue
                    in_flight[name] = pool.submit(_push_identified, push_one, name, path, stale)
                if not in_flight:
                    if clock() - last_work > idle_exit:
                        return stored
                    time.sleep(0.02)
                    continue
                done, _ = wait(list(in_flight.values()), timeout=0.05, return_when=FIRST_COMPLETED)
                for name in [n for n, f in in_flight.items() if f in done]:
                    future = in_flight.pop(name)
                    last_work = clock()
                    try:
                        result, identity = future.result()
                    except _Stale:
                        continue  # not stored: the request stays queued for the pusher that follows
                    except FileNotFoundError:
                        if name in requested:
                            _report(spool, spool.write_error, name, f"unable to archive {name}: the file disappeared")
                        continue
                    except Exception as exc:  # one file's failure must not stop the others
                        message = str(exc) if isinstance(exc, OpsdbError) else f"{type(exc).__name__}: {exc}"
                        log.warning("storing %s failed: %s", name, message)
                        if name in requested:
                            _report(spool, spool.write_error, name, message)
                        continue
                    _report(spool, spool.write_ok, name, result.sha256, result.size, identity, fingerprint)
                    requested.discard(name)
                    stored_names.add(name)
                    stored += 1


def _report(spool: PushSpool, write: Callable[..., None], name: str, *args: Any) -> None:
    """Write a result marker; with the spool full, drop the request instead (the waiting wal-push
    sees it gone without a marker and pushes in-process) rather than stopping the pusher."""
    try:
        write(name, *args)
    except OSError as exc:
        log.warning("unable to record the result for %s in %s: %s; its wal-push works in-process", name,
                    spool.root, exc.strerror or exc)  # fmt: skip
        spool.drop_request(name)


class _Stale(Exception):
    """The settings changed after this push was queued and before it began: it does not begin."""


def _push_identified(
    push_one: Callable[[str, str], repo_wal.PushResult], name: str, path: str, stale: Callable[[], bool]
) -> tuple[repo_wal.PushResult, str | None]:
    """Push, and name the file that was read (unchanged during the push) for the ok marker. Asks
    stale() first, in the worker, so a push waiting for a free worker never starts under old settings."""
    if stale():
        raise _Stale(name)
    before = file_identity(path)
    result = push_one(name, path)
    return result, before if before is not None and before == file_identity(path) else None


def pusher_push_one(repo: WalRepo) -> Callable[[str, str], repo_wal.PushResult]:
    def push_one(name: str, path: str) -> repo_wal.PushResult:
        return _push(repo, name, path)

    return push_one


# --- prefetch: the background fetcher ------------------------------------------------------------


def next_names(name: str, depth: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[str]:
    """The segments recovery will most likely ask for after NAME (same timeline, in order)."""
    wal = parse_wal_name(name, segment_size)
    if wal.kind != "segment" or wal.segno is None:
        return []
    return [segment_name(wal.timeline, wal.segno + i, segment_size) for i in range(1, depth + 1)]


def run_prefetcher(
    spool: FetchSpool,
    fetch_one: Callable[[str, str], tuple[str, int]],
    *,
    depth: int,
    workers: int,
    idle_exit: float = PREFETCH_IDLE_EXIT,
    clock: Callable[[], float] = time.monotonic,
    stale: Callable[[], bool] = lambda: False,
) -> int:
    """Answer wal-fetch requests and keep the next `depth` segments ready in the spool, each fetched
    through authentication into a temp file and published atomically with its digest."""
    spool.ensure()
    fetched = 0
    with spool.lock.hold() as mine:
        if not mine:
            return 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool.fail_path)
        in_flight: dict[str, Future[tuple[str, int]]] = {}
        tokens: dict[str, str] = {}  # name -> token of the request waiting for it
        missing: set[str] = set()  # ahead names not archived (yet), for the current request
        current: tuple[str, str, bool] | None = None
        window: list[str] = []
        last_work = clock()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wal-fetch") as pool:
            while True:
                want = spool.read_want()
                if want is not None and want != current:
                    name, token, served = want
                    current = want
                    missing.clear()
                    last_work = clock()
                    window = next_names(name, depth)
                    if not served:
                        tokens[name] = token
                        window.insert(0, name)
                    for leftover in spool.present() - set(window):  # not `stale`: that is the settings check
                        spool.discard(leftover)  # consumed, skipped, or from another timeline
                if not in_flight and stale():
                    return fetched  # settings changed: the waiting wal-fetch fetches itself, then a new prefetcher
                present = spool.present()
                for name in window:
                    if name in in_flight or name in present or name in missing:
                        continue
                    if len(in_flight) >= workers:
                        break
                    tmp = spool.data_path(f".{name}.{os.getpid()}.tmp")
                    in_flight[name] = pool.submit(fetch_one, name, tmp)
                if not in_flight:
                    if clock() - last_work > idle_exit:
                        return fetched
                    time.sleep(0.01)
                    continue
                done, _ = wait(list(in_flight.values()), timeout=0.05, return_when=FIRST_COMPLETED)
                for name in [n for n, f in in_flight.items() if f in done]:
                    future = in_flight.pop(name)
                    last_work = clock()
                    tmp = spool.data_path(f".{name}.{os.getpid()}.tmp")
                    token = tokens.pop(name, None)
                    try:
                        sha, size = future.result()
                    except NotFound as exc:
                        missing.add(name)
                        if token:
                            spool.write_result(name, token, "missing", str(exc))
                        continue
                    except OSError as exc:  # the spool is full (or not writable): not a repository problem
                        missing.add(name)
                        message = f"the prefetch spool cannot hold {name}: {exc.strerror or exc} ({spool.data})"
                        log.warning("%s", message)
                        if token and not _result(spool, name, token, "spool", message):
                            return fetched  # cannot even answer: exit, and the waiting wal-fetch fetches itself
                        continue
                    except Exception as exc:
                        missing.add(name)  # not retried for this request; the next request retries
                        if token:
                            status = "integrity" if isinstance(exc, IntegrityError) else "error"
                            if not _result(spool, name, token, status, str(exc) or type(exc).__name__):
                                return fetched
                        continue
                    try:
                        spool.publish(name, tmp, sha, size)
                    except OSError as exc:
                        spool.discard(name)
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(tmp)
                        message = f"the prefetch spool cannot hold {name}: {exc.strerror or exc} ({spool.data})"
                        if token and not _result(spool, name, token, "spool", message):
                            return fetched
                        missing.add(name)
                        continue
                    fetched += 1


def _result(spool: FetchSpool, name: str, token: str, status: str, message: str) -> bool:
    """Answer a waiting wal-fetch; False when even that cannot be written (the spool is full)."""
    try:
        spool.write_result(name, token, status, message)
    except OSError:
        return False
    return True


def prefetch_fetch_one(repo: WalRepo, data_dir: str | None = None) -> Callable[[str, str], tuple[str, int]]:
    def fetch_one(name: str, tmp: str) -> tuple[str, int]:
        last: Exception | None = None
        for attempt in range(FETCH_ATTEMPTS):
            try:
                return fetch_checked(repo, name, tmp, data_dir)
            except (NotFound, marker.RepositoryMissing):
                raise
            except (RepositoryUnavailable, IntegrityError) as exc:
                repo.state.forget()
                last = exc
                time.sleep(0.5 * 2**attempt)
        assert last is not None
        raise last

    return fetch_one
