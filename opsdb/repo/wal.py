"""The WAL archive in the repository: push, fetch, list, continuity scan and timeline history files.

Push never overwrites: the object is written create-only (if_absent). When the name already exists the
stored object is read back (authenticated) and its plaintext SHA-256 compared with the local file:
equal means PostgreSQL is re-archiving after a crash (success), different means two histories claim
the same WAL name (Conflict, nothing replaced).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from opsdb.errors import Conflict, IntegrityError, NotFound, UsageError
from opsdb.model.lsn import (
    DEFAULT_SEGMENT_SIZE,
    HistoryEntry,
    SegmentRange,
    WalName,
    contiguous_ranges,
    gaps,
    parse_history,
    parse_wal_name,
    segment_name,
)
from opsdb.repo import envelope, layout
from opsdb.storage.base import ObjectInfo, Storage

if TYPE_CHECKING:  # types only: cryptography is imported by stream.crypto alone
    from opsdb.stream.crypto import EncryptionKey

READ_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class PushResult:
    name: str
    key: str
    size: int
    stored_size: int
    sha256: str  # of what digest_of says: the stored object's trailer digest, or the local plaintext's
    already_stored: bool  # True: the same content was archived before (a retry after a crash)
    digest_of: str = "compressed"


class _Hashing:
    """Pass chunks through while hashing and counting them."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)  # one pass: draining after a conflict continues where put stopped
        self.sha = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.sha.update(chunk)
            self.size += len(chunk)
            yield chunk


def read_file(path: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def check_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalName:
    """Only names PostgreSQL archives may enter the repository (no paths, no stray files)."""
    if "/" in name or name != name.strip():
        raise UsageError(f"invalid WAL file name {name!r}: expected a bare file name")
    return parse_wal_name(name, segment_size)


def push(
    storage: Storage,
    cluster: str,
    name: str,
    source: Callable[[], Iterable[bytes]],
    codec: envelope.Codec,
    keys: Mapping[str, EncryptionKey],
    system_identifier: int | str | None = None,
) -> PushResult:
    """Store one WAL file create-only. Same content already stored -> success; different -> Conflict.
    The object is bound to its name and the cluster's `system_identifier` (envelope version 3).

    The trailer's digest is of the compressed bytes (as for backups): the plaintext stays checked end
    to end by zstd's content checksum and the trailer's size, and SHA-256 then covers ~0.5 MB instead
    of 16 MiB per segment (10 of a push's 26 ms of CPU here, and as much on every fetch). Nothing
    compares a segment's stored digest with a local file's: a repeated push reads the stored object
    back and hashes its plaintext (stored_plain_sha256).

    source() returns the file's chunks; it is called again only for a conflicting .partial."""
    check_name(name)
    key = layout.wal_object(cluster, name)
    try:
        stored = envelope.put_object(
            storage, key, source(), codec, if_absent=True, system_identifier=system_identifier, plaintext_digest=False
        )
    except Conflict:
        hashing = _Hashing(source())  # the rare path (a retry after a crash): read the file again
        for _ in hashing:
            pass
        local = hashing.sha.hexdigest()
        existing = stored_plain_sha256(storage, key, keys)
        if existing != local and name.endswith(".partial"):
            return _push_partial_variant(storage, name, key, local, source, codec, keys, system_identifier)
        if existing != local:
            raise Conflict(
                f"unable to archive {name}: {storage.url.rstrip('/')}/{key} already exists with different content "
                f"(stored sha256 {existing[:16]}..., local {local[:16]}...); nothing was overwritten",
                hint="two clusters or timelines archive into the same place, or the stored file is damaged: "
                "check [clusters] names and the archive before touching it",
            ) from None
        info = storage.stat(key)
        return PushResult(name, key, hashing.size, info.size if info else 0, local, True, "plaintext")
    return PushResult(name, key, stored.size, stored.stored_size, stored.sha256, False, stored.digest_of)


def _push_partial_variant(
    storage: Storage,
    name: str,
    key: str,
    local: str,
    source: Callable[[], Iterable[bytes]],
    codec: envelope.Codec,
    keys: Mapping[str, EncryptionKey],
    system_identifier: int | str | None = None,
) -> PushResult:
    """Two promotions from the same timeline (two PITRs) archive the same .partial name with different
    content. Recovery never reads .partial files, and refusing would stall the new primary's archiver
    (PostgreSQL retries the same file forever), so the second one is kept beside the first under
    NAME.<sha256 prefix>: nothing is overwritten and nothing is lost."""
    variant = f"{key}.{local[:16]}"
    try:
        stored = envelope.put_object(
            storage,
            variant,
            source(),
            codec,
            if_absent=True,
            system_identifier=system_identifier,
            plaintext_digest=False,
        )
    except Conflict:
        if stored_plain_sha256(storage, variant, keys) != local:
            raise Conflict(f"unable to archive {name}: {variant} exists with different content") from None
        info = storage.stat(variant)
        size = info.size if info else 0
        return PushResult(name, variant, size, size, local, True, "plaintext")
    return PushResult(name, variant, stored.size, stored.stored_size, stored.sha256, False, stored.digest_of)


def stored_plain_sha256(storage: Storage, key: str, keys: Mapping[str, EncryptionKey]) -> str:
    """SHA-256 of an archived object's plaintext, read back through authentication."""
    try:
        # hashed here, not taken from the trailer: an envelope version 2 object's digest is of its
        # compressed bytes (one read either way; this path runs only for a repeated push)
        sha = hashlib.sha256()
        for chunk in envelope.get_object(storage, key, keys):
            sha.update(chunk)
        return sha.hexdigest()
    except IntegrityError as exc:
        # an unreadable object with this name still must not be replaced: report it as a conflict
        return f"unreadable ({exc})"


def fetch(
    storage: Storage,
    cluster: str,
    name: str,
    keys: Mapping[str, EncryptionKey],
    system_identifiers: Collection[str] = (),
    *,
    readback: envelope.Readback | None = None,
) -> Iterator[bytes]:
    """The plaintext of an archived WAL file, authenticated and (envelope version 3) bound to this
    name, cluster and one of `system_identifiers` (any, when empty). NotFound when it is not archived.
    `readback` gets its size and digest once it was read to the end."""
    check_name(name)
    key = layout.wal_object(cluster, name)
    return envelope.get_object(storage, key, keys, system_identifiers=system_identifiers, readback=readback)


def exists(storage: Storage, cluster: str, name: str) -> ObjectInfo | None:
    check_name(name)
    return storage.stat(layout.wal_object(cluster, name))


@dataclasses.dataclass(frozen=True)
class ArchivedFile:
    wal: WalName
    info: ObjectInfo


def list_archive(storage: Storage, cluster: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[ArchivedFile]:
    """Every WAL object of the cluster (segments, partials, backup labels, histories), sorted by key."""
    files = []
    for info in storage.list(layout.wal_prefix(cluster)):
        name = info.key.rsplit("/", 1)[-1]
        try:
            wal = parse_wal_name(name, segment_size)
        except UsageError:
            continue  # not ours to judge (a temp file of a driver, a stray upload): ignored, never deleted here
        files.append(ArchivedFile(wal, info))
    return files


def read_history(
    storage: Storage, cluster: str, timeline: int, keys: Mapping[str, EncryptionKey]
) -> list[HistoryEntry]:
    """The parsed history of a timeline (its ancestors); [] for timeline 1. NotFound when not archived."""
    if timeline == 1:
        return []
    name = f"{timeline:08X}.history"
    text = b"".join(fetch(storage, cluster, name, keys)).decode("utf-8", "replace")
    return parse_history(text)


@dataclasses.dataclass
class ArchiveScan:
    """What the archive holds, per timeline: segment ranges, gaps, histories."""

    segments: dict[tuple[int, int], float]  # (timeline, segno) -> upload time
    sizes: dict[tuple[int, int], int]  # (timeline, segno) -> stored bytes
    ranges: dict[int, list[SegmentRange]]
    histories: dict[int, list[HistoryEntry]]
    partials: list[str]
    backup_labels: list[str]
    stored_bytes: int
    segment_size: int = DEFAULT_SEGMENT_SIZE

    @property
    def timelines(self) -> list[int]:
        return sorted(set(self.ranges) | set(self.histories))

    def gaps(self, timeline: int) -> list[tuple[str, str, int]]:
        """Missing segments between archived ranges of a timeline: (first missing, last missing, count)."""
        found = []
        for first, last in gaps(self.ranges.get(timeline, [])):
            found.append(
                (
                    segment_name(timeline, first, self.segment_size),
                    segment_name(timeline, last, self.segment_size),
                    last - first + 1,
                )
            )
        return found

    def latest_timeline(self) -> int:
        return max([1, *self.ranges, *self.histories])

    def history(self, timeline: int) -> list[HistoryEntry]:
        return self.histories.get(timeline, [])


def scan(
    storage: Storage, cluster: str, keys: Mapping[str, EncryptionKey], segment_size: int = DEFAULT_SEGMENT_SIZE
) -> ArchiveScan:
    """One listing of the archive, plus the (small) history files read back and parsed."""
    files = list_archive(storage, cluster, segment_size)
    segments = {
        (f.wal.timeline, f.wal.segno): f.info.mtime
        for f in files
        if f.wal.kind == "segment" and f.wal.segno is not None
    }
    sizes = {
        (f.wal.timeline, f.wal.segno): f.info.size for f in files if f.wal.kind == "segment" and f.wal.segno is not None
    }
    histories: dict[int, list[HistoryEntry]] = {}
    for f in files:
        if f.wal.kind == "history":
            try:
                histories[f.wal.timeline] = read_history(storage, cluster, f.wal.timeline, keys)
            except NotFound:
                continue  # deleted between list and read
    return ArchiveScan(
        segments=segments,
        sizes=sizes,
        ranges=contiguous_ranges(f.wal for f in files),
        histories=histories,
        partials=[f.wal.name for f in files if f.wal.kind == "partial"],
        backup_labels=[f.wal.name for f in files if f.wal.kind == "backup"],
        stored_bytes=sum(f.info.size for f in files),
        segment_size=segment_size,
    )
