"""wal-push and wal-fetch: the use cases, run by the WAL helper (ops/wal/helper.py) or in-process.

Errors are distinct on purpose (errors.exit_code maps them for wal-fetch): NotFound -> 1 (not archived,
quiet), RepositoryUnavailable / IntegrityError -> above 125 (recovery must abort rather than end early).
NotFound is only answered once the cluster's marker (repo/marker.py) proved the repository and the
cluster are there; every fetched segment's page header is checked against its name before it is
handed to PostgreSQL, and every pushed segment's system identifier against the cluster's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opsdb.errors import IntegrityError, NotFound, OpsdbError, RepositoryUnavailable, UsageError
from opsdb.model.lsn import parse_wal_name
from opsdb.pg import control, walpage
from opsdb.repo import envelope, layout, marker
from opsdb.repo import wal as repo_wal
from opsdb.storage.base import Storage

if TYPE_CHECKING:
    from opsdb.config import Settings
    from opsdb.ops.common.codec import RepositoryOptions

log = logging.getLogger("opsdb.wal")

FETCH_ATTEMPTS = 3
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
    header = walpage.read_segment_header(path)
    if header is None:
        raise UsageError(f"unable to archive {path}: it does not start with a WAL segment header")
    return header.system_identifier


def fetch_to(
    repo: WalRepo, name: str, dest: str, system_identifiers: frozenset[int] = frozenset(), *, sync: bool = False
) -> int:
    """Fetch NAME into dest atomically (temp + rename); the plaintext's size.

    The temp file is renamed only after the whole object was read and authenticated, so dest never
    holds a partial or unauthenticated file. Each byte is hashed once: by the envelope, checking the
    digest in the object's trailer. No fsync for durability, on purpose: a restore_command's file
    needs none. PostgreSQL moves every restored file into pg_wal itself (KeepFileRestoredFromArchive)
    with durable_rename, which fsyncs it first; until then it is a temporary fetched again after a
    crash. Syncing 16 MiB per segment in the call cost recovery several seconds per 200 segments here.

    sync=True (a segment fetched ahead, off recovery's path) writes the data out before the rename:
    the fsync PostgreSQL then does on its own path finds nothing left to write (10-30 ms per 16 MiB
    segment on this disk, which `cp` as restore_command pays there)."""
    tmp = f"{dest}.opsdb.{os.getpid()}.{id(dest)}.tmp"
    readback = envelope.Readback()
    try:
        # 0600 like PostgreSQL's own WAL files: a WAL file holds table data
        content = walpage.ContentCheck(name, layout.wal_object(repo.cluster, name), system_identifiers)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            bound_to = {str(s) for s in system_identifiers}
            for chunk in repo_wal.fetch(repo.storage, repo.cluster, name, repo.keys, bound_to, readback=readback):
                content.feed(chunk)
                fh.write(chunk)
            if sync:
                fh.flush()
                os.fdatasync(fh.fileno())
        content.finish()
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return readback.size


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
            size = fetch_checked(repo, name, dest, data_dir_of(dest))
            return FetchResult(name, dest, size, "repository")
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


def fetch_checked(repo: WalRepo, name: str, dest: str, data_dir: str | None, *, sync: bool = False) -> int:
    """fetch_to, with the repository proven first: NotFound only when the cluster's marker (read at
    most PROOF_TTL ago) shows the repository and the cluster are there; RepositoryMissing otherwise.
    A segment's system identifier is checked against the marker's (or, in a repository written
    before markers, the restoring server's pg_control)."""
    proof = repo.state.prove(repo.storage, repo.cluster)
    # the restoring server's own identifier is exact (PostgreSQL compares with it too, but ends
    # recovery at a mismatch instead of failing); else the cluster's, current or retired
    own = control.system_identifier(data_dir) if data_dir is not None else None
    sysids = frozenset({own}) if own is not None else proof.system_identifiers
    try:
        return fetch_to(repo, name, dest, sysids, sync=sync)
    except NotFound:
        repo.state.prove(repo.storage, repo.cluster, max_age=PROOF_TTL)
        raise


def data_dir_of(dest: str) -> str | None:
    """The data directory of a restore_command's %p (pg_wal/RECOVERYXLOG), when it is one."""
    wal_dir = os.path.dirname(os.path.abspath(dest))
    return os.path.dirname(wal_dir) if os.path.basename(wal_dir) == "pg_wal" else None


def wal_repo_from_settings(settings: Settings | RepositoryOptions, cluster: str, *, writable: bool = False) -> WalRepo:
    """Storage (read-only with writable=False), codec and read keys from validated settings (ops/common/codec.py)."""
    from opsdb.ops.common.codec import repository

    repo = repository(settings, writable=writable)
    # single-threaded zstd for WAL: a 16 MiB file gains nothing from a worker pool started per object,
    # and async mode already compresses push_workers files at once
    codec = dataclasses.replace(repo.codec, threads=0)
    return WalRepo(repo.storage, cluster, codec, repo.keys)
