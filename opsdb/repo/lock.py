"""Repository locks: one backup (and one dump) per cluster at a time, across hosts.

A lock is the plain JSON object clusters/<c>/locks/<kind>.lock, created with create-only semantics
(S3 If-None-Match, link() on file://). It names its owner (host, pid, command, a random owner id),
when it was taken, its last heartbeat and when it expires. While the run lasts, a heartbeat thread
rewrites it every ttl/3 with a later expiry; a run that dies stops renewing it.

A lock whose expiry has passed is taken over without a race between contenders: each contender
first creates (create-only) a takeover marker named after the digest of the stale lock's bytes.
Exactly one can create it; only that one deletes the stale lock and creates its own, then re-reads
the lock to confirm. A lock held by a process of this same host that no longer exists (a run
killed with -9) counts as expired at once. Expiry compares the holder's written time with the reader's clock, so hosts
need roughly synchronised clocks (NTP); the default ttl of 5 minutes leaves a wide margin.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from opsdb.errors import Conflict, LockHeld, NotFound, OperationFailed, OpsdbError
from opsdb.proc import pid_alive
from opsdb.repo import layout
from opsdb.storage.base import Storage

log = logging.getLogger("opsdb.lock")

DEFAULT_TTL = timedelta(minutes=5)
# A lock written without an expiry (an older writer) counts as expired this long after it was taken.
FOREIGN_TTL = timedelta(hours=1)
MARKER_KEEP = timedelta(days=1)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _fmt(value: datetime | None) -> str:
    if value is None:
        return "unknown"
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """What a lock object says about its holder."""

    owner: str | None
    kind: str
    cluster: str
    host: str | None
    pid: int | None
    command: str | None
    started: datetime | None
    heartbeat: datetime | None
    expires: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "kind": self.kind,
            "cluster": self.cluster,
            "host": self.host,
            "pid": self.pid,
            "command": self.command,
            "started": _fmt(self.started),
            "heartbeat": _fmt(self.heartbeat),
            "expires": _fmt(self.expires),
            # older readers (retention's first lock) look for these names
            "holder": self.command,
            "since": _fmt(self.started),
        }

    @classmethod
    def from_bytes(cls, raw: bytes, *, kind: str, cluster: str) -> LockInfo:
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        started = _time(doc.get("started") or doc.get("since"))
        expires = _time(doc.get("expires"))
        if expires is None and started is not None:
            expires = started + FOREIGN_TTL
        pid = doc.get("pid")
        return cls(
            owner=doc.get("owner"),
            kind=str(doc.get("kind") or kind),
            cluster=str(doc.get("cluster") or cluster),
            host=doc.get("host"),
            pid=int(pid) if isinstance(pid, int | str) and str(pid).isdigit() else None,
            command=doc.get("command") or doc.get("holder"),
            started=started,
            heartbeat=_time(doc.get("heartbeat")) or started,
            expires=expires,
        )

    def expired(self, now: datetime) -> bool:
        # no readable expiry at all (garbage in the lock object): treat as expired so it can be taken over
        return self.expires is None or self.expires <= now

    def dead_on(self, host: str) -> bool:
        """True when the holder ran on `host` (this machine) and its process is gone: a run killed
        with -9 does not block the next one on the same host until the lock expires."""
        if self.host != host or self.pid is None or self.pid <= 0:
            return False
        return not pid_alive(self.pid)

    def describe(self, what: str) -> str:
        """'backup of cluster main is already running on host X pid 123 since ...; lock expires at ...'."""
        doing = f"{what} of cluster {self.cluster}"
        if self.command and self.command != what:
            doing += f" (held by {self.command})"
        where = f"on host {self.host or 'unknown'} pid {self.pid if self.pid is not None else 'unknown'}"
        return f"{doing} is already running {where} since {_fmt(self.started)}; lock expires at {_fmt(self.expires)}"


class RepositoryLock:
    """`with RepositoryLock(storage, "main", "backup"):` — held for the block, renewed by a heartbeat.

    `kind` is the lock's name ("backup", "dump", "retention"); `command` what the holder is doing."""

    def __init__(
        self,
        storage: Storage,
        cluster: str,
        kind: str,
        *,
        command: str | None = None,
        ttl: timedelta = DEFAULT_TTL,
        heartbeat_interval: float | None = None,
        clock: Clock = _utcnow,
        host: str | None = None,
        pid: int | None = None,
        check_local_pid: bool = True,
    ) -> None:
        self.storage = storage
        self.cluster = cluster
        self.kind = kind
        self.command = command or kind
        self.ttl = ttl
        self.interval = heartbeat_interval if heartbeat_interval is not None else ttl.total_seconds() / 3
        self.clock = clock
        self.host = host or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self.check_local_pid = check_local_pid
        self.owner = uuid.uuid4().hex
        self.key = layout.lock_object(cluster, kind)
        self.info: LockInfo | None = None
        self.acquired_at: float = 0.0  # epoch seconds when taken (leftovers older than this are dead)
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- public ------------------------------------------------------------------------------------

    def acquire(self) -> LockInfo:
        """Take the lock, or take over an expired one; LockHeld naming the holder otherwise."""
        self.acquired_at = time.time()
        mine = self._new_info(self.clock())
        try:
            self.storage.put(self.key, [self._encode(mine)], if_absent=True)
        except Conflict:
            self._take_over(mine)
        self._confirm()
        self.info = mine
        self._prune_markers()
        if self.interval > 0:
            self._thread = threading.Thread(target=self._beat, name=f"opsdb-lock-{self.kind}", daemon=True)
            self._thread.start()
        return mine

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.info is None:
            return
        try:
            current = self._read()
            if current is not None and current.owner == self.owner:
                self.storage.delete([self.key])
        except OpsdbError as exc:  # the lock then expires on its own
            log.warning("could not release the %s lock of cluster %s: %s", self.kind, self.cluster, exc)
        self.info = None

    def check(self) -> None:
        """Raise OperationFailed if the lock was lost (taken over after heartbeats failed).

        Call before committing: a run that lost its lock must not publish anything."""
        if self.lost:
            raise OperationFailed(f"unable to finish the {self.kind} of cluster {self.cluster}: {self.lost}")

    def __enter__(self) -> RepositoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- internals ---------------------------------------------------------------------------------

    def _new_info(self, now: datetime, started: datetime | None = None) -> LockInfo:
        return LockInfo(
            owner=self.owner,
            kind=self.kind,
            cluster=self.cluster,
            host=self.host,
            pid=self.pid,
            command=self.command,
            started=started or now,
            heartbeat=now,
            expires=now + self.ttl,
        )

    @staticmethod
    def _encode(info: LockInfo) -> bytes:
        return json.dumps(info.to_dict(), sort_keys=True).encode()

    def _read_raw(self) -> bytes | None:
        try:
            with self.storage.open(self.key) as fh:
                return fh.read()
        except NotFound:
            return None

    def _read(self) -> LockInfo | None:
        raw = self._read_raw()
        return None if raw is None else LockInfo.from_bytes(raw, kind=self.kind, cluster=self.cluster)

    def _held(self, holder: LockInfo) -> LockHeld:
        return LockHeld(
            f"unable to start: {holder.describe(self.kind)}",
            hint="wait for it to finish; a lock of a dead run is taken over once it expires",
        )

    def _take_over(self, mine: LockInfo) -> None:
        raw = self._read_raw()
        if raw is None:  # released between our put and our read: one more plain attempt
            try:
                self.storage.put(self.key, [self._encode(mine)], if_absent=True)
                return
            except Conflict:
                raw = self._read_raw() or b""
        holder = LockInfo.from_bytes(raw, kind=self.kind, cluster=self.cluster)
        if not holder.expired(self.clock()) and not (self.check_local_pid and holder.dead_on(self.host)):
            raise self._held(holder)
        generation = hashlib.sha256(raw).hexdigest()[:32]
        try:
            self.storage.put(
                layout.lock_takeover_marker(self.cluster, self.kind, generation),
                [json.dumps({"owner": self.owner, "host": self.host, "pid": self.pid}).encode()],
                if_absent=True,
            )
        except Conflict:
            raise LockHeld(
                f"unable to start: another run is taking over the expired {self.kind} lock of cluster {self.cluster}",
                hint="wait for it to finish",
            ) from None
        if self._read_raw() != raw:  # renewed or replaced meanwhile: not stale any more
            current = self._read()
            raise self._held(current) if current else LockHeld(f"unable to start: {self.kind} lock changed")
        log.warning("taking over an expired lock: %s", holder.describe(self.kind))
        self.storage.delete([self.key])
        try:
            self.storage.put(self.key, [self._encode(mine)], if_absent=True)
        except Conflict:
            current = self._read()
            raise self._held(current) if current else LockHeld(f"unable to start: {self.kind} lock changed") from None

    def _confirm(self) -> None:
        current = self._read()
        if current is None or current.owner != self.owner:
            if current is None:
                raise LockHeld(f"unable to start: the {self.kind} lock of cluster {self.cluster} vanished")
            raise self._held(current)

    def _prune_markers(self) -> None:
        horizon = time.time() - MARKER_KEEP.total_seconds()
        prefix = layout.locks_prefix(self.cluster) + f"{self.kind}.takeover-"
        try:
            old = [i.key for i in self.storage.list(prefix) if i.mtime and i.mtime < horizon]
            if old:
                self.storage.delete(old)
        except OpsdbError:
            pass  # markers are tiny; the next run prunes them

    def _beat(self) -> None:
        assert self.info is not None
        started = self.info.started
        expires = self.info.expires
        while not self._stop.wait(self.interval):
            now = self.clock()
            try:
                current = self._read()
                if current is None or current.owner != self.owner:
                    who = current.describe(self.kind) if current else "the lock object is gone"
                    self.lost = f"the {self.kind} lock was lost ({who})"
                    log.error(self.lost)
                    return
                info = self._new_info(now, started)
                self.storage.put(self.key, [self._encode(info)])
                expires = info.expires
            except OpsdbError as exc:
                log.warning("lock heartbeat failed (will retry): %s", exc)
                if expires is not None and now >= expires:
                    self.lost = f"the {self.kind} lock expired: heartbeats failed ({exc})"
                    return
