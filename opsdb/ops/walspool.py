"""The local spool shared by the lean wal-push / wal-fetch calls and their long-lived background helpers.

Standard library only: this module runs on the per-WAL-file path, where every import is paid once per
segment. The background pusher and prefetcher (ops/wal.py) do the repository work.

Layout under `[wal] spool_dir`/<cluster>/ (mode 0700):
    push/queue/NAME         a request: the absolute path of the WAL file (written by wal-push)
    push/ok/NAME            "opsdb-ok 1", SHA-256, size, identity (lines): NAME is durably stored (pusher)
    push/error/NAME         why storing NAME failed (the next wal-push of NAME reports it and retries)
    push/pusher.lock        flock held by the running pusher; .pid and .log beside it
    fetch/<dir>/want        "NAME TOKEN": the file recovery asked for last (written by wal-fetch)
    fetch/<dir>/data/NAME   a prefetched file, with NAME.json {"sha256", "size", "repository", "cluster", "identity", "boot_id"}
    fetch/<dir>/result/NAME.json  {"token", "status": "missing"|"error", "message"} for a request
where <dir> is derived from the data directory being recovered and the repository URL, so two
restores never share prefetched files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time

from opsdb.errors import IntegrityError, NotFound, OperationFailed, RepositoryUnavailable, UsageError

NAME_RE = re.compile(r"^[0-9A-F]{8}(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history)$")
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
READ_CHUNK = 1024 * 1024
OK_MARKER = "opsdb-ok 2"  # first line of an ok marker (format version; 2 added the settings fingerprint)
MARKER_MAX_AGE = 24 * 3600  # ok markers nobody collected (archive_command changed) are dropped after a day

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, pathlib and hashlib would cost ~14 ms per WAL file at run time
    from collections.abc import Callable, Iterator
    from typing import Any

    StartDaemon = Callable[[], Callable[[], bool]]  # starts the helper, returns "is it still alive?"


class SpoolUnusable(Exception):
    """The spool cannot take what this call needs (full, not writable): the call works without it
    and warns with this message."""


def spool_unusable(what: str, where: str, exc: OSError) -> SpoolUnusable:
    return SpoolUnusable(f"the {what} spool cannot be used: {exc.strerror or exc} ({exc.filename or where})")


def settings_fingerprint(config_path: str | None) -> str:
    """A digest of the config file's bytes and the OPSDB_*/AWS_* environment. The pusher marks what it
    stored with the one it loaded its settings under; wal-push accepts only its own (a segment stored
    before the config changed, e.g. in a moved repository, is pushed again, never reported done)."""
    content = b""
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                content = fh.read()
        except OSError:
            content = b"-unreadable-"
    env = "\0".join(sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(("OPSDB_", "AWS_"))))
    return small_sha256(content + b"\0" + env.encode())[:32]


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def small_sha256(data: bytes) -> str:
    """SHA-256 of a few bytes without loading OpenSSL (hashlib's import costs ~6 ms per WAL file)."""
    try:
        from _sha2 import sha256  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # Python 3.11
        except ImportError:
            from hashlib import sha256
    return sha256(data).hexdigest()


def atomic_write(path: str, data: bytes) -> None:
    """Write data under path so readers see the old file or the whole new one, never a part.

    Not fsynced: nothing in the spool is the only copy of anything (see write_ok and serve)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def file_identity(path: str) -> str | None:
    """device:inode:size:mtime_ns of a file: the same file, unchanged, has the same identity."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def sha256_file(path: str) -> tuple[str, int]:
    import hashlib

    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _read_json(path: str) -> dict[str, Any] | None:
    import json  # not on wal-push's path: json costs ~3 ms per WAL file

    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class DaemonLock:
    """The flock a background helper holds while it runs; others only test it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def held_by_other(self) -> bool:
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

    @contextlib.contextmanager
    def hold(self) -> Iterator[bool]:
        """Yield True while holding the lock, False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield True
        finally:
            os.close(fd)


def stop_helpers(spool_dir: str) -> int:
    """SIGTERM every background helper (WAL agent, pusher, prefetcher) serving under spool_dir; how many.

    For owners of a throwaway spool (the demo, tests): in normal operation helpers exit when idle."""
    import signal
    from pathlib import Path

    stopped = 0
    root = Path(spool_dir)
    for path in sorted(root.rglob("*.lock")) if root.is_dir() else []:
        if not DaemonLock(str(path)).held_by_other():
            continue
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(path.read_text().strip()), signal.SIGTERM)
            stopped += 1
    return stopped


class PushSpool:
    def __init__(self, spool_dir: str, cluster: str) -> None:
        self.root = os.path.join(spool_dir, cluster, "push")
        self.queue = os.path.join(self.root, "queue")
        self.ok = os.path.join(self.root, "ok")
        self.error = os.path.join(self.root, "error")
        self.lock = DaemonLock(os.path.join(self.root, "pusher.lock"))
        self.log_path = os.path.join(self.root, "pusher.log")
        self.fail_path = os.path.join(self.root, "pusher.fail")

    def ensure(self) -> PushSpool:
        _make_dirs(self.queue, self.ok, self.error)
        return self

    # --- client side (wal-push) ---------------------------------------------------------------

    def request(self, name: str, source: str) -> None:
        atomic_write(os.path.join(self.queue, name), os.path.abspath(source).encode())

    def take_ok(self, name: str, path: str, digest: dict[str, str], fingerprint: str = "") -> bool:
        """True (and the marker consumed) when NAME is stored with exactly the content of path, under
        the settings this call has (`fingerprint`; a marker made under others is consumed and refused).

        The marker names the file the pusher read (device, inode, size, mtime in ns): the very same
        file is accepted without reading it again; anything else must match the SHA-256, which is
        computed once per call into `digest` and only when needed."""
        marker = os.path.join(self.ok, name)
        try:
            with open(marker, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().split("\n")
        except OSError:
            return False
        if len(lines) != 5 or lines[0] != OK_MARKER:
            return False
        _, sha256, _size, identity, stored_under = lines
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)
        if stored_under != fingerprint:
            return False  # stored under settings that changed since (another repository, another key)
        if identity and identity == file_identity(path):
            return True
        if "sha256" not in digest:
            digest["sha256"] = sha256_file(path)[0]
        return sha256 == digest["sha256"]

    def take_error(self, name: str) -> str | None:
        marker = os.path.join(self.error, name)
        try:
            with open(marker, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)
        return text.strip() or f"unable to archive {name}"

    def start_failure(self) -> str | None:
        return _read_text(self.fail_path)

    # --- pusher side ----------------------------------------------------------------------------

    def queued(self) -> dict[str, str]:
        found = {}
        for entry in os.scandir(self.queue):
            if valid_name(entry.name):
                text = _read_text(entry.path)
                if text:
                    found[entry.name] = text
        return found

    def has_ok(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.ok, name))

    def write_ok(self, name: str, sha256: str, size: int, identity: str | None = None, fingerprint: str = "") -> None:
        """Not fsynced, on purpose: the repository holds the file durably before this is written, and a
        marker lost or damaged in a crash only makes the next wal-push of NAME ask again (the store
        then finds the same content already there). A marker never vouches for other content: take_ok
        checks the file's identity or its SHA-256."""
        marker = f"{OK_MARKER}\n{sha256}\n{size}\n{identity or ''}\n{fingerprint}"
        atomic_write(os.path.join(self.ok, name), marker.encode())
        self.drop_request(name)

    def write_error(self, name: str, message: str) -> None:
        atomic_write(os.path.join(self.error, name), message.encode())
        self.drop_request(name)

    def drop_request(self, name: str) -> None:
        """Done with NAME (or no result can be recorded: the waiting wal-push sees it gone, unanswered)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.queue, name))

    def requested(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.queue, name))

    def drop_old_markers(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for entry in os.scandir(self.ok):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > MARKER_MAX_AGE:
                    os.unlink(entry.path)


def ready_files(wal_dir: str) -> list[str]:
    """Names PostgreSQL has marked ready for archiving in wal_dir, history files first (as PostgreSQL does)."""
    try:
        names = [e.name[:-6] for e in os.scandir(os.path.join(wal_dir, "archive_status")) if e.name.endswith(".ready")]
    except OSError:
        return []
    names = [n for n in names if valid_name(n)]
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


# --- prefetch spool (wal-fetch) -----------------------------------------------------------------


def fetch_spool_key(data_dir: str, repository: str) -> str:
    return small_sha256(f"{os.path.realpath(data_dir)}\0{repository}".encode())[:16]


def boot_id() -> str | None:
    """This boot of the machine: page-cache contents written without fsync are trusted only within it."""
    return _read_text("/proc/sys/kernel/random/boot_id")


def system_identifier(data_dir: str) -> int | None:
    """pg_control starts with the 8-byte system identifier (native byte order)."""
    try:
        with open(os.path.join(data_dir, "global", "pg_control"), "rb") as fh:
            raw = fh.read(8)
    except OSError:
        return None
    return int.from_bytes(raw, "little") if len(raw) == 8 else None


def segment_system_identifier(path: str) -> int | None:
    """A segment's first page has the long header: xlp_sysid at byte 24."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(32)
    except OSError:
        return None
    return int.from_bytes(raw[24:32], "little") if len(raw) == 32 else None


class FetchSpool:
    def __init__(self, spool_dir: str, cluster: str, data_dir: str, repository: str) -> None:
        self.cluster = cluster
        self.repository = repository
        self.data_dir = data_dir
        self.root = os.path.join(spool_dir, cluster, "fetch", fetch_spool_key(data_dir, repository))
        self.data = os.path.join(self.root, "data")
        self.result = os.path.join(self.root, "result")
        self.want_path = os.path.join(self.root, "want")
        self.lock = DaemonLock(os.path.join(self.root, "prefetch.lock"))
        self.log_path = os.path.join(self.root, "prefetch.log")
        self.fail_path = os.path.join(self.root, "prefetch.fail")

    def ensure(self) -> FetchSpool:
        _make_dirs(self.data, self.result)
        return self

    def clear(self) -> None:
        """Forget every prefetched file (a new restore into the same directory starts clean)."""
        for d in (self.data, self.result):
            if os.path.isdir(d):
                for entry in os.scandir(d):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.want_path)

    def data_path(self, name: str) -> str:
        return os.path.join(self.data, name)

    def has(self, name: str) -> bool:
        return os.path.exists(self.data_path(f"{name}.json"))

    # --- client side (wal-fetch) --------------------------------------------------------------

    def want(self, name: str, token: str, *, served: bool = False) -> None:
        """Tell the prefetcher what recovery asked for; served=True: only the files after it are needed."""
        atomic_write(self.want_path, f"{name} {token} {'served' if served else 'need'}".encode())

    def serve(self, name: str, dest: str) -> bool:
        """Move (or copy) a prefetched NAME to dest atomically, only if it is exactly what was authenticated.

        The prefetcher authenticated the file and recorded its identity (device, inode, size, mtime) and
        the boot it was written in. The very same file, unchanged, in the same boot, is renamed into
        place without reading it again; anything else is copied only if its SHA-256 matches. No fsync:
        PostgreSQL moves every restored file into pg_wal itself with durable_rename, which fsyncs it
        first (KeepFileRestoredFromArchive); until then it is a temporary fetched again after a crash."""
        src = self.data_path(name)
        meta = self.data_path(f"{name}.json")
        doc = _read_json(meta)
        if doc is None or not os.path.exists(src):
            return False
        if doc.get("name") != name or doc.get("repository") != self.repository or doc.get("cluster") != self.cluster:
            self.discard(name)
            return False
        if SEGMENT_RE.match(name):
            expected = system_identifier(self.data_dir)
            found = segment_system_identifier(src)
            if expected is not None and found is not None and expected != found:
                self.discard(name)  # prefetched for another cluster: never served
                return False
        ok = False
        current_boot = boot_id()
        if current_boot and doc.get("boot_id") == current_boot and doc.get("identity") == file_identity(src):
            try:
                os.replace(src, dest)
                ok = True
            except OSError:
                ok = False  # another file system: copy it
        if not ok:
            ok = copy_verified(src, dest, doc.get("sha256"), doc.get("size"))
        self.discard(name)
        return ok

    def discard(self, name: str) -> None:
        for p in (self.data_path(name), self.data_path(f"{name}.json")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def take_result(self, name: str, token: str) -> dict[str, Any] | None:
        path = os.path.join(self.result, f"{name}.json")
        doc = _read_json(path)
        if doc is None or doc.get("token") != token:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return doc

    # --- prefetcher side ----------------------------------------------------------------------

    def read_want(self) -> tuple[str, str, bool] | None:
        """(name, token, served) of the latest request, or None."""
        try:
            name, token, state = (_read_text(self.want_path) or "").split()
        except ValueError:
            return None
        return (name, token, state == "served") if valid_name(name) else None

    def present(self) -> set[str]:
        return {e.name[:-5] for e in os.scandir(self.data) if e.name.endswith(".json")}

    def write_result(self, name: str, token: str, status: str, message: str) -> None:
        import json

        doc = {"token": token, "status": status, "message": message}
        atomic_write(os.path.join(self.result, f"{name}.json"), json.dumps(doc).encode())

    def publish(self, name: str, tmp: str, sha256: str, size: int) -> None:
        """Make a fully fetched and authenticated file visible: data first, then its description."""
        import json

        final = self.data_path(name)
        os.replace(tmp, final)
        doc = {
            "name": name,
            "sha256": sha256,
            "size": size,
            "repository": self.repository,
            "cluster": self.cluster,
            "identity": file_identity(final),
            "boot_id": boot_id(),
        }
        atomic_write(self.data_path(f"{name}.json"), json.dumps(doc).encode())


def copy_verified(src: str, dest: str, sha256: Any, size: Any) -> bool:
    """Copy src to dest (temp + rename) only when its content has the expected digest and size."""
    import hashlib

    tmp = f"{dest}.opsdb.{os.getpid()}.tmp"
    sha = hashlib.sha256()
    n = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a WAL file holds table data
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(READ_CHUNK):
                sha.update(chunk)
                n += len(chunk)
                fout.write(chunk)
            if sha.hexdigest() != sha256 or n != size:
                raise ValueError("digest mismatch")
        os.replace(tmp, dest)
    except (OSError, ValueError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        return False
    return True


def _make_dirs(*dirs: str) -> None:
    """The spool's directories, mode 0700 (a stat each when they exist: this runs once per WAL file)."""
    for d in dirs:
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o700, exist_ok=True)


def _read_text(path: str) -> str | None:
    """A small file's text, stripped; None when missing or empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def wait_until(predicate: Any, timeout: float, poll: float = 0.005) -> Any:
    """Poll predicate() until it returns something truthy or timeout passes (bounded)."""
    deadline = time.monotonic() + timeout
    delay = poll
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


# --- the client side of async mode: what one wal-push / wal-fetch call does --------------------------


def push_via_spool(
    spool: PushSpool, path: str, start_pusher: StartDaemon, *, timeout: float, fingerprint: str = ""
) -> bool:
    """Hand PATH to the background pusher and wait until it is durably stored (or failed).
    The caller has made the spool (`spool.ensure()`).

    Returns True when the pusher had already stored it ahead of this call. Raises OperationFailed on
    failure or timeout (PostgreSQL retries the file later)."""
    name = os.path.basename(path)
    if not valid_name(name):
        raise UsageError(f"invalid WAL file name {name!r}: expected a segment, .partial, .backup or .history file")
    if not os.path.isfile(path):
        raise UsageError(f"unable to archive {path}: no such file", hint="archive_command must pass %p")
    digest: dict[str, str] = {}
    if spool.take_ok(name, path, digest, fingerprint):
        return True
    spool.take_error(name)  # an earlier attempt's failure: this attempt retries
    try:
        spool.request(name, path)
    except OSError as exc:
        raise spool_unusable("async push", spool.queue, exc) from None
    deadline = time.monotonic() + timeout
    alive: Any = None
    starts = 0
    delay = 0.002
    while time.monotonic() < deadline:
        if spool.take_ok(name, path, digest, fingerprint):
            return False
        error = spool.take_error(name)
        if error:
            raise OperationFailed(error)
        if not spool.requested(name) and not spool.take_ok(name, path, digest, fingerprint):
            # the pusher took the request but could not write its result (see run_pusher)
            raise SpoolUnusable(
                f"the async push spool cannot be used: the pusher could not record a result in {spool.ok}"
            )
        if (alive is None or not alive()) and not spool.lock.held_by_other():
            if spool.take_ok(name, path, digest, fingerprint):
                return False
            failure = spool.start_failure()
            if starts and failure:
                raise OperationFailed(f"the background WAL pusher cannot run: {failure}")
            if starts >= 3:
                raise OperationFailed(f"the background WAL pusher keeps stopping; see {spool.log_path}")
            alive = start_pusher()
            starts += 1
        time.sleep(delay)
        delay = min(delay * 1.5, 0.02)
    raise OperationFailed(f"timed out after {timeout:.0f}s waiting for the background pusher to store {name}")


def fetch_via_spool(spool: FetchSpool, name: str, dest: str, start_prefetcher: StartDaemon, *, timeout: float) -> bool:
    """Serve NAME from the prefetch spool (made by the caller), asking the prefetcher for it if needed.

    True: dest written. False: no answer in time (the caller fetches in-process). Raises NotFound when
    the prefetcher found NAME is not archived, RepositoryUnavailable / IntegrityError when it could not
    be read, SpoolUnusable when the spool could not hold it (full: the caller fetches directly)."""
    if not valid_name(name):
        raise UsageError(f"invalid WAL file name {name!r}")
    token = os.urandom(8).hex()
    served = False
    try:
        if spool.has(name):
            spool.want(name, token, served=True)  # first, so the prefetcher does not fetch it again meanwhile
            served = spool.serve(name, dest)
        if not served:
            spool.want(name, token)
    except OSError as exc:
        raise spool_unusable("prefetch", spool.root, exc) from None
    alive: Any = None
    if not spool.lock.held_by_other():
        alive = start_prefetcher()
    if served:
        return True
    deadline = time.monotonic() + timeout
    delay = 0.002
    while time.monotonic() < deadline:
        if spool.serve(name, dest):
            return True
        result = spool.take_result(name, token)
        if result is not None:
            message = str(result.get("message") or f"unable to fetch {name}")
            if result.get("status") == "missing":
                raise NotFound(message)
            if result.get("status") == "integrity":
                raise IntegrityError(message)
            if result.get("status") == "spool":
                raise SpoolUnusable(message)
            raise RepositoryUnavailable(message)
        if alive is not None and not alive() and not spool.lock.held_by_other():
            return False  # the prefetcher stopped: fetch in-process instead
        time.sleep(delay)
        delay = min(delay * 1.5, 0.02)
    return False
