"""Catalog records: what a committed backup or dump is, as stored in clusters/<c>/catalog/<id>.json.

One record type serves every kind ("physical" for `opsdb backup`, "incremental" for `opsdb backup
--incremental` with `parent` the backup it builds on, "logical" for `opsdb dump`), so every reader
(list, retention, drill, verify, info) handles one shape. `to_dict()` is the stored
document (every field); `to_json()` is the SPEC's `backups list --json` row. Times are UTC and
written as ISO-8601 with "Z"; LSNs as PostgreSQL prints them.

Backup ids sort by start time: 20261121T101500Z-F (physical, "full"), 20261121T101500Z-I (incremental)
or 20261121T101500Z-D (dump).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from opsdb.errors import UsageError
from opsdb.model.lsn import Lsn

RECORD_FORMAT = 1
PHYSICAL = "physical"
INCREMENTAL = "incremental"  # a physical backup of the blocks changed since its parent (PostgreSQL 17+)
LOGICAL = "logical"
BASE_BACKUP_KINDS = (PHYSICAL, INCREMENTAL)  # what pg_basebackup made: restored with `opsdb restore`
KIND_SUFFIX = {PHYSICAL: "F", INCREMENTAL: "I", LOGICAL: "D"}
_KIND_OF_SUFFIX = {v: k for k, v in KIND_SUFFIX.items()}
_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-([FID])$")


# --- ids and times --------------------------------------------------------------------------------


def new_backup_id(when: datetime, kind: str) -> str:
    """The id of a backup started at `when` (UTC, second precision), e.g. 20261121T101500Z-F."""
    if kind not in KIND_SUFFIX:
        raise ValueError(f"unknown backup kind {kind!r}")
    return f"{when.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{KIND_SUFFIX[kind]}"


def next_backup_id(backup_id: str) -> str:
    """The id one second later (used when an id is already taken in the repository)."""
    when, kind = parse_backup_id(backup_id)
    return new_backup_id(when + timedelta(seconds=1), kind)


def parse_backup_id(backup_id: str) -> tuple[datetime, str]:
    """(start time, kind) of an id made by new_backup_id; UsageError for anything else."""
    match = _ID_RE.match(backup_id)
    if not match:
        raise UsageError(f"invalid backup id {backup_id!r}: expected the form 20261121T101500Z-F")
    when = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return when, _KIND_OF_SUFFIX[match.group(2)]


def is_backup_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def kind_of_id(backup_id: str) -> str | None:
    """ "physical"/"incremental"/"logical" from an id's suffix, None for ids not made by opsdb backup/dump."""
    match = _ID_RE.match(backup_id)
    if not match:
        return None
    return _KIND_OF_SUFFIX[match.group(2)]


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _lsn(value: Any) -> Lsn | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Lsn) else Lsn.parse(str(value))


# --- parts of a record ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """One object of a backup, by its name under backups/<id>/ (e.g. base.tar, pg_tblspc-16385.tar)."""

    name: str
    size: int  # plaintext bytes
    stored_size: int  # bytes in the repository (envelope, compressed, encrypted)
    sha256: str  # the object's trailer digest: of what sha256_of says
    role: str = "data"  # base | tablespace | manifest | dump | globals
    # "plaintext" (envelope version 1, and every record written before version 2 existed) or
    # "compressed" (version 2: backups and dumps, see repo/envelope_format.py)
    sha256_of: str = "plaintext"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StoredFile:
        return cls(
            name=str(doc["name"]),
            size=int(doc.get("size") or 0),
            stored_size=int(doc.get("stored_size") or 0),
            sha256=str(doc.get("sha256") or ""),
            role=str(doc.get("role") or "data"),
            sha256_of=str(doc.get("sha256_of") or "plaintext"),
        )


@dataclasses.dataclass(frozen=True)
class Tablespace:
    """A user tablespace of a physical backup; its files are in the object `pg_tblspc-<oid>.tar`."""

    oid: int
    name: str
    location: str  # on the source server

    @property
    def object_name(self) -> str:
        return tablespace_object_name(self.oid)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Tablespace:
        return cls(int(doc["oid"]), str(doc.get("name") or doc["oid"]), str(doc.get("location") or ""))


def tablespace_object_name(oid: int) -> str:
    return f"pg_tblspc-{oid}.tar"


@dataclasses.dataclass(frozen=True)
class DumpDatabase:
    """One database of a logical dump: `pg_dump -Fc` output stored as the object `object`."""

    name: str
    object: str  # e.g. "pg_dump/app.dump"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DumpDatabase:
        return cls(str(doc["name"]), str(doc["object"]))


def dump_object_name(database: str) -> str:
    """Object name of one database's dump; the name is hex-escaped when it is not a plain word."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", database) and not database.startswith("."):
        return f"pg_dump/{database}.dump"
    return f"pg_dump/x-{database.encode().hex()}.dump"


GLOBALS_OBJECT = "globals.sql"
MANIFEST_OBJECT = "backup_manifest"
BASE_OBJECT = "base.tar"


# --- the record -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BackupRecord:
    """A committed physical backup or logical dump (everything `backups show` prints)."""

    id: str
    cluster: str
    kind: str  # "physical" | "incremental" | "logical"
    start_time: datetime
    stop_time: datetime
    size_bytes: int  # plaintext bytes of all objects
    stored_bytes: int  # bytes in the repository
    compression: str  # zstd | gzip | none
    encrypted: bool
    key_id: str | None = None
    status: str = "complete"
    compression_level: int | None = None
    pg_version: str | None = None  # e.g. "15.18"
    pg_version_num: int | None = None  # e.g. 150018
    system_identifier: str | None = None  # a string: it does not fit a JSON double
    timeline: int | None = None
    start_lsn: Lsn | None = None
    stop_lsn: Lsn | None = None
    from_standby: bool = False
    wal_included: bool = False  # physical: the WAL start..stop is inside base.tar (pg_wal/)
    objects: tuple[StoredFile, ...] = ()
    tablespaces: tuple[Tablespace, ...] = ()
    databases: tuple[DumpDatabase, ...] = ()
    globals_object: str | None = None
    with_passwords: bool = False
    host: str | None = None  # the host opsdb ran on
    opsdb_version: str | None = None
    format: int = RECORD_FORMAT
    parent: str | None = None  # incremental: the id of the backup it builds on (full or incremental)
    compressed_on: str | None = None  # physical: "server" (pg_basebackup server-zstd) or "client" (opsdb)

    # --- derived -------------------------------------------------------------------------------

    @property
    def is_physical(self) -> bool:
        """Made by pg_basebackup (a full or an incremental backup), restored with `opsdb restore`."""
        return self.kind in BASE_BACKUP_KINDS

    @property
    def is_incremental(self) -> bool:
        return self.kind == INCREMENTAL

    @property
    def duration(self) -> timedelta:
        return self.stop_time - self.start_time

    @property
    def ratio(self) -> float | None:
        """stored / original (0.05 = stored in 5 % of the size)."""
        return self.stored_bytes / self.size_bytes if self.size_bytes else None

    def object(self, name: str) -> StoredFile | None:
        return next((o for o in self.objects if o.name == name), None)

    # --- serialisation -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The SPEC's `backups list --json` row."""
        return {
            "id": self.id,
            "kind": self.kind,
            "cluster": self.cluster,
            "status": self.status,
            "start_time": format_time(self.start_time),
            "stop_time": format_time(self.stop_time),
            "start_lsn": str(self.start_lsn) if self.start_lsn else None,
            "stop_lsn": str(self.stop_lsn) if self.stop_lsn else None,
            "timeline": self.timeline,
            "size_bytes": self.size_bytes,
            "stored_bytes": self.stored_bytes,
            "encrypted": self.encrypted,
            "compression": self.compression,
            "parent": self.parent,
        }

    def to_dict(self) -> dict[str, Any]:
        """The stored catalog document: the list fields plus everything else."""
        doc = self.to_json()
        doc.update(
            {
                "format": self.format,
                "key_id": self.key_id,
                "compression_level": self.compression_level,
                "pg_version": self.pg_version,
                "pg_version_num": self.pg_version_num,
                "system_identifier": self.system_identifier,
                "from_standby": self.from_standby,
                "wal_included": self.wal_included,
                "objects": [o.to_dict() for o in self.objects],
                "tablespaces": [t.to_dict() for t in self.tablespaces],
                "databases": [d.to_dict() for d in self.databases],
                "globals_object": self.globals_object,
                "with_passwords": self.with_passwords,
                "host": self.host,
                "opsdb_version": self.opsdb_version,
                "compressed_on": self.compressed_on,
            }
        )
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> BackupRecord:
        """Read a catalog document (tolerates the optional fields being absent)."""
        try:
            start = parse_time(doc["start_time"])
            stop = parse_time(doc.get("stop_time")) or start
            assert start is not None and stop is not None
            return cls(
                id=str(doc["id"]),
                cluster=str(doc.get("cluster") or ""),
                kind=str(doc.get("kind") or PHYSICAL),
                start_time=start,
                stop_time=stop,
                size_bytes=int(doc.get("size_bytes") or 0),
                stored_bytes=int(doc.get("stored_bytes") or 0),
                compression=str(doc.get("compression") or "none"),
                encrypted=bool(doc.get("encrypted")),
                key_id=doc.get("key_id"),
                status=str(doc.get("status") or "complete"),
                compression_level=doc.get("compression_level"),
                pg_version=doc.get("pg_version"),
                pg_version_num=doc.get("pg_version_num"),
                system_identifier=None if doc.get("system_identifier") is None else str(doc["system_identifier"]),
                timeline=None if doc.get("timeline") is None else int(doc["timeline"]),
                start_lsn=_lsn(doc.get("start_lsn")),
                stop_lsn=_lsn(doc.get("stop_lsn")),
                from_standby=bool(doc.get("from_standby")),
                wal_included=bool(doc.get("wal_included")),
                objects=tuple(StoredFile.from_dict(o) for o in doc.get("objects") or ()),
                tablespaces=tuple(Tablespace.from_dict(t) for t in doc.get("tablespaces") or ()),
                databases=tuple(DumpDatabase.from_dict(d) for d in doc.get("databases") or ()),
                globals_object=doc.get("globals_object"),
                with_passwords=bool(doc.get("with_passwords")),
                host=doc.get("host"),
                opsdb_version=doc.get("opsdb_version"),
                format=int(doc.get("format") or RECORD_FORMAT),
                parent=None if doc.get("parent") is None else str(doc["parent"]),
                compressed_on=doc.get("compressed_on"),
            )
        except (KeyError, TypeError, ValueError, AssertionError, UsageError) as exc:
            raise ValueError(f"malformed catalog record {doc.get('id', '?')!r}: {exc}") from None


# A logical dump is a BackupRecord with kind "logical" and `databases` filled in.
DumpRecord = BackupRecord


# --- restore plans --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RestoreStep:
    """Extract one stored tar into one directory."""

    object: str  # object name under backups/<id>/
    dest: str  # absolute directory
    stored_size: int
    size: int
    backup_id: str | None = None  # a chain member's id (incremental restores); None: the plan's backup

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RestorePlan:
    """Everything a restore will do, computed before anything is written (--dry-run prints it)."""

    backup: BackupRecord
    target_dir: str
    steps: tuple[RestoreStep, ...]
    tablespace_map: dict[int, str]  # oid -> directory the tablespace is restored into
    target: str = "consistent"  # what recovery aims for; PITR targets add their own names
    recovery_settings: dict[str, str] = dataclasses.field(default_factory=dict)  # postgresql.auto.conf
    signal_file: str | None = None  # "recovery.signal" | "standby.signal" | None (crash recovery to the end)
    start: bool = False
    port: int | None = None
    recovery: dict[str, Any] | None = None  # PITR plan (ops/recovery/pitr.py RecoveryPlan.to_json): window, WAL, target
    # whether the restored copy archives: "off" (never into the repository), "keep" (as the backup's
    # configuration says: a restore that replaces the primary), "standby" (a standby keeps it)
    archive_mode: str = "off"
    # an incremental backup: the ids of its chain, full backup first (ops/recovery/restore_chain.py), staged
    # under staging_dir and combined into target_dir by pg_combinebackup
    chain: tuple[str, ...] = ()
    staging_dir: str | None = None

    @property
    def bytes_to_read(self) -> int:
        return sum(s.stored_size for s in self.steps) + int((self.recovery or {}).get("wal_bytes", 0))

    @property
    def bytes_to_write(self) -> int:
        """Into the target. Combined, a chain is about as large as its full backup (estimated so)."""
        if self.chain:
            return sum(s.size for s in self.steps if s.backup_id == self.chain[0])
        return sum(s.size for s in self.steps)

    @property
    def staging_bytes(self) -> int:
        """Staging space an incremental restore needs besides the target: every member extracted."""
        return sum(s.size for s in self.steps) if self.chain else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup.id,
            "target": self.target,
            "target_dir": self.target_dir,
            "steps": [s.to_dict() for s in self.steps],
            "tablespace_map": {str(k): v for k, v in self.tablespace_map.items()},
            "recovery_settings": dict(self.recovery_settings),
            "signal_file": self.signal_file,
            "bytes_to_read": self.bytes_to_read,
            "bytes_to_write": self.bytes_to_write,
            "start": self.start,
            "port": self.port,
            "recovery": self.recovery,
            "archive_mode": self.archive_mode,
            "chain": list(self.chain),
            "staging_dir": self.staging_dir,
            "staging_bytes": self.staging_bytes,
        }
