"""opsdb verify: re-read every stored object and prove the repository can still restore.

What is checked, per object (in parallel, each read streamed in bounded memory):
- the envelope: header CRC, authentication tag of every encrypted chunk, final plaintext size and
  SHA-256 (the trailer), i.e. nothing was flipped, truncated, reordered or encrypted with another key;
- against the catalog: the object exists, and its plaintext size and SHA-256 match what the backup
  recorded when it was taken;
- a backup's tar files against PostgreSQL's own backup_manifest (read from the same stream, so each
  tar is read once): the manifest's own checksum, every manifest file present in the tars with its
  size, no stray files, and each file's checksum when the manifest uses SHA-2 (CRC-32C manifests get
  names and sizes here; their checksums are checked by pg_verifybackup in `opsdb drill`);
- WAL continuity: from each backup's start segment to the newest archived segment of its timeline
  path, no segment missing (a missing one cuts every restore through it short);
- that every object is the one its name says: objects written since envelope version 3 carry their
  identity (cluster, system identifier, kind, name), so a swapped, replayed or foreign object fails
  its identity check naming both; objects written before are checked by content: each WAL segment's
  long page header against its name (timeline, segment address, system identifier), each history
  file against its timeline, each catalog entry's id against its file name.

verify.py reads the objects and compares them with the catalog; verify_result holds what was
found, verify_identity the checks by content and the cluster's identifiers, verify_wal which WAL
is read and its continuity, verify_progress the progress shown.

Exit 1 names every bad object and what is wrong with it; exit 0 prints a summary.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opsdb.errors import IntegrityError, NotFound, OpsdbError, UsageError
from opsdb.model.chain import broken_links, chain_of
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE
from opsdb.ops.common.backup_manifest import ManifestCheck, check_tar_stream, is_manifest_tar, parse_manifest
from opsdb.ops.common.estimate import announce_total
from opsdb.ops.common.phases import phase
from opsdb.ops.proof.verify_identity import cluster_identities, content_check
from opsdb.ops.proof.verify_progress import CountingStorage, bytes_to_read, log_checked
from opsdb.ops.proof.verify_result import Problem, VerifyResult, field_of, strip_key
from opsdb.ops.proof.verify_wal import all_wal, check_continuity, wal_needed, wal_sizes
from opsdb.repo import envelope, layout
from opsdb.repo import wal as walrepo
from opsdb.storage.base import Storage

__all__ = ["WORKERS", "Problem", "VerifyResult", "backup_objects", "verify_repository"]

WORKERS = 4  # parallel object reads; each holds about two chunks (a few MiB) at a time


@dataclasses.dataclass(frozen=True)
class _Expected:
    """What the catalog says an object should be (None: nothing recorded beyond its existence)."""

    size: int | None = None
    sha256: str | None = None
    sha256_of: str = "plaintext"  # catalog entries written before envelope version 2 have no sha256_of


def backup_objects(cluster: str, record: Any) -> dict[str, _Expected]:
    """The objects a catalog record lists, keyed by repository key, with their recorded size/digest."""
    out: dict[str, _Expected] = {}
    for obj in field_of(record, "objects", None) or []:
        name = field_of(obj, "name") or field_of(obj, "key")
        if not name:
            continue
        key = name if "/" in name and name.startswith("clusters/") else layout.backup_object(cluster, record.id, name)
        out[key] = _Expected(field_of(obj, "size"), field_of(obj, "sha256"), field_of(obj, "sha256_of") or "plaintext")
    return out


def verify_repository(
    storage: Storage,
    cluster: str,
    keys: Mapping[str, Any],
    backups: Iterable[Any],
    *,
    backup_id: str | None = None,
    workers: int = WORKERS,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    clock: Callable[[], float] = time.monotonic,
    on_bytes: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Verify the whole repository of a cluster, or one backup and the WAL it needs. on_bytes: stored
    bytes as they are read (its `set_total` learns the stored size of everything to read)."""
    started = clock()
    records = [b for b in backups if field_of(b, "kind", "physical") in ("physical", "incremental", "logical")]
    broken = broken_links(records)
    if backup_id is not None:
        records = chain_of(records, backup_id)  # an incremental is verified with every backup it builds on
        broken = broken_links(records) if records else []
        if not records:
            raise NotFound(
                f"no backup {backup_id!r} in the catalog of cluster {cluster!r}", hint="see `opsdb backups list`"
            )
    result = VerifyResult(cluster, f"backup {backup_id}" if backup_id else "repository", backups=len(records))
    sysids = cluster_identities(storage, cluster, records, result)
    scan = walrepo.scan(storage, cluster, keys, segment_size)
    result.timelines = scan.timelines
    phase(
        "verify", "scan", scope=result.scope, backups=len(records), timelines=",".join(map(str, scan.timelines)) or None
    )
    for child, parent in broken:
        result.problems.append(
            Problem(
                layout.catalog_entry(cluster, child),
                f"incremental backup {child}: its parent {parent} is not in the catalog, so it cannot be restored",
            )
        )

    expected: dict[str, _Expected] = {}
    manifests: dict[str, str] = {}  # backup id -> manifest key
    for record in records:
        recorded = backup_objects(cluster, record)
        expected.update(recorded)
        expected.setdefault(layout.catalog_entry(cluster, record.id), _Expected())
        manifest_key = layout.backup_object(cluster, record.id, "backup_manifest")
        if manifest_key in recorded:
            manifests[record.id] = manifest_key
        elif field_of(record, "kind", "physical") in ("physical", "incremental"):
            result.notes.append(f"backup {record.id}: no backup_manifest recorded (taken with --no-manifest?)")

    wal_keys = wal_needed(scan, records, result, segment_size) if backup_id else all_wal(storage, cluster)
    keys_to_read = dict(expected)
    for key in wal_keys:
        keys_to_read.setdefault(key, _Expected())
    listed: dict[str, int] | None = None  # the whole repository's listing: the stored sizes for the bar
    if backup_id is None:  # the whole repository: also every other object stored for this cluster
        leftovers = _interrupted_deletions(storage, cluster, result)
        listed = {}
        for info in storage.list(layout.cluster_prefix(cluster)):
            listed[info.key] = info.size
            if (
                "/locks/" not in info.key
                and not info.key.startswith(leftovers)
                and info.key != layout.cluster_marker(cluster)  # plain JSON
            ):
                keys_to_read.setdefault(info.key, _Expected())

    total = bytes_to_read(storage, keys_to_read, listed, wal_sizes(cluster, scan, segment_size))
    announce_total(on_bytes, total)  # the progress bar's 100 %
    phase("verify", "read", objects=len(keys_to_read), stored_bytes=total, workers=workers)
    parsed = _read_manifests(storage, manifests, keys, result)
    reading = CountingStorage(storage, on_bytes) if on_bytes is not None else storage
    tar_checks: dict[str, ManifestCheck] = {}
    for record in records:
        manifest = parsed.get(record.id)
        if manifest is not None:
            for key in backup_objects(cluster, record):
                if is_manifest_tar(key):
                    tar_checks[key] = manifest

    unbound: list[str] = []  # objects written before envelope version 3 (checked by content)

    def read_one(key: str) -> tuple[str, int, int, str | None, str, str | None]:
        try:
            if key in tar_checks:
                size, stored, sha, sha_of = check_tar_stream(reading, key, keys, tar_checks[key])
            else:
                content = content_check(key, sysids)
                readback = envelope.Readback()
                obj = envelope.verify_object(
                    reading,
                    key,
                    keys,
                    system_identifiers={str(s) for s in sysids},
                    inspect=content.feed if content else None,
                    readback=readback,
                )
                if content is not None:
                    content.finish()
                if readback.version < envelope.IDENTITY_BOUND:
                    unbound.append(key)
                size, stored, sha, sha_of = obj.size, obj.stored_size, obj.sha256, obj.digest_of
            return key, size, stored, sha, sha_of, None
        except NotFound:
            return key, 0, 0, None, "", "missing: listed in the catalog but not in the repository"
        except IntegrityError as exc:
            return key, 0, 0, None, "", strip_key(key, exc.message)
        except OpsdbError as exc:
            return key, 0, 0, None, "", f"unreadable: {exc.message}"

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="opsdb-verify") as pool:
        for key, size, stored, sha, sha_of, error in pool.map(read_one, sorted(keys_to_read)):
            result.objects += 1
            if error:
                result.problems.append(Problem(key, error))
                continue
            result.plain_bytes += size
            result.stored_bytes += stored
            want = keys_to_read[key]
            if want.size is not None and want.size != size:
                result.problems.append(Problem(key, f"size {size} differs from the catalog's {want.size}"))
            elif want.sha256 and sha and want.sha256_of != sha_of:
                what = (
                    f"carries a digest of its {sha_of} bytes where the catalog recorded one of the "
                    f"{want.sha256_of} bytes: not the object this backup stored"
                )
                result.problems.append(Problem(key, what))
            elif want.sha256 and sha and want.sha256 != sha:
                result.problems.append(
                    Problem(key, f"sha256 {sha[:16]}... differs from the catalog's {want.sha256[:16]}...")
                )
    for manifest in parsed.values():
        result.manifest_files += manifest.files_seen
        for path, what in manifest.finish():
            result.problems.append(Problem(manifest.describe(path), what))
    if unbound:
        result.notes.append(
            f"{len(unbound)} objects were written before objects were bound to their names (envelope version "
            "1 or 2): WAL checked by its page headers, history files by their timelines, catalog entries by their ids"
        )
    if backup_id is None:
        check_continuity(scan, records, result, segment_size)
    result.wal_segments = sum(1 for k in keys_to_read if "/wal/" in k and not k.endswith((".history", ".backup")))
    result.problems.sort(key=lambda p: p.key)
    log_checked(cluster, records, keys_to_read, result.problems, segment_size)
    result.seconds = clock() - started
    return result


def _interrupted_deletions(storage: Storage, cluster: str, result: VerifyResult) -> tuple[str, ...]:
    """Retention's deletion markers (plain JSON, not envelopes) name backups a killed `retention
    apply` was deleting: reported as such, and what is left of those backups is not read (it is
    no backup any more; the next run deletes it). Returns the prefixes to skip (markers included)."""
    skip = [layout.deleting_prefix(cluster)]
    for info in storage.list(layout.deleting_prefix(cluster)):
        backup_id = info.key.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            with storage.open(info.key) as fh:
                doc = json.loads(fh.read(64 * 1024))
            if doc["id"] != backup_id:
                raise ValueError(backup_id)
        except (ValueError, KeyError, TypeError):
            result.problems.append(Problem(info.key, "not a retention deletion marker (not JSON naming this id)"))
            continue
        left = sum(1 for _ in storage.list(layout.backup_prefix(cluster, backup_id)))
        result.notes.append(
            f"interrupted retention run: {doc.get('kind', 'backup')} {backup_id} was being deleted "
            f"({left} of its objects are left); `opsdb retention apply` finishes the deletion"
        )
        skip.append(layout.backup_prefix(cluster, backup_id))
    return tuple(skip)


def _read_manifests(
    storage: Storage, manifests: Mapping[str, str], keys: Mapping[str, Any], result: VerifyResult
) -> dict[str, ManifestCheck]:
    parsed: dict[str, ManifestCheck] = {}
    for backup_id, key in manifests.items():
        try:
            data = b"".join(envelope.get_object(storage, key, keys))
            parsed[backup_id] = parse_manifest(data, key)
        except NotFound:
            continue  # reported as missing by the object pass
        except (IntegrityError, UsageError) as exc:
            result.problems.append(Problem(key, strip_key(key, exc.message)))
    return parsed
