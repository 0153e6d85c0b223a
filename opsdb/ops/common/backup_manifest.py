"""PostgreSQL's backup_manifest: parse it, and check a backup's tar streams against it, reading each tar once.

`opsdb verify` checks stored backups with it, `opsdb restore` the restored files (ops/recovery/restore_manifest.py).

The manifest (PG13+) lists every file of the base backup with its size and, unless the backup was
taken with --manifest-checksums=NONE, a checksum (CRC32C by default, or SHA-224/256/384/512). The
manifest ends with a SHA-256 of itself. Here we check the manifest's own checksum, that every
listed file is in the tars with its size, that the tars hold no unlisted files, and each file's
SHA-2 checksum. CRC-32C needs a C extension Python lacks, so CRC-32C checksums are left to
pg_verifybackup, which `opsdb drill` runs on the restored files.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import threading
from collections.abc import Mapping
from typing import Any

from opsdb.errors import IntegrityError, UsageError
from opsdb.repo import envelope
from opsdb.storage.base import Storage
from opsdb.stream.stages import IterReader

READ = 1024 * 1024
_SHA = {"SHA224": "sha224", "SHA256": "sha256", "SHA384": "sha384", "SHA512": "sha512"}
# written by pg_basebackup/restore but never listed in a manifest (pg_verifybackup ignores them too)
_NOT_LISTED = ("backup_manifest", "postgresql.auto.conf", "recovery.signal", "standby.signal", "tablespace_map")
_TBLSPC_TAR = re.compile(r"(?:pg_tblspc-)?(\d+)\.tar$")


def is_manifest_tar(key: str) -> bool:
    """Tars whose files the manifest lists: base.tar and tablespace tars (not a pg_wal.tar)."""
    name = key.rsplit("/", 1)[-1]
    return name == "base.tar" or bool(_TBLSPC_TAR.fullmatch(name))


def tar_prefix(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    if name == "base.tar":
        return ""
    match = _TBLSPC_TAR.fullmatch(name)
    return f"pg_tblspc/{match.group(1)}/" if match else ""


class ManifestCheck:
    """A parsed manifest and what the tar streams of its backup have shown so far (thread-safe)."""

    def __init__(self, key: str, files: dict[str, dict[str, Any]]) -> None:
        self.key = key
        self.files = files
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.problems: list[tuple[str, str]] = []
        self.files_seen = 0

    def describe(self, path: str) -> str:
        return f"{self.key.rsplit('/', 1)[0]}/{path}" if not path.startswith(self.key) else path

    def saw(self, path: str, problem: str | None) -> None:
        with self._lock:
            self._seen.add(path)
            self.files_seen += 1
            if problem:
                self.problems.append((path, problem))

    def finish(self) -> list[tuple[str, str]]:
        """Problems found, plus every listed file no tar contained."""
        missing = [
            (p, "missing: listed in backup_manifest but not in the backup's tar files")
            for p in self.files
            if p not in self._seen
        ]
        return self.problems + sorted(missing)


def parse_manifest(data: bytes, key: str) -> ManifestCheck:
    """Parse a backup_manifest and check its own SHA-256 (IntegrityError naming the key if wrong)."""
    marker = data.rfind(b'"Manifest-Checksum"')
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"object {key} is not a valid backup_manifest: {exc}") from None
    if marker < 0 or "Manifest-Checksum" not in doc:
        raise IntegrityError(f"object {key} is not a valid backup_manifest: no Manifest-Checksum")
    # the checksum covers everything up to and including the newline before the checksum's key
    covered = data[: data.rfind(b"\n", 0, marker) + 1]
    if hashlib.sha256(covered).hexdigest() != str(doc["Manifest-Checksum"]).lower():
        raise IntegrityError(f"object {key} backup_manifest checksum does not match its content")
    files: dict[str, dict[str, Any]] = {}
    for entry in doc.get("Files", []):
        path = entry.get("Path")
        if path is None and "Encoded-Path" in entry:
            path = bytes.fromhex(entry["Encoded-Path"]).decode("utf-8", "surrogateescape")
        if path is None:
            raise UsageError(f"unable to read {key}: a file entry without a path")
        files[path] = entry
    return ManifestCheck(key, files)


def _check_member(member: tarfile.TarInfo, reader: Any, entry: dict[str, Any]) -> str | None:
    want = int(entry.get("Size", -1))
    if member.size != want:
        return f"size {member.size} differs from backup_manifest's {want}"
    algorithm = _SHA.get(str(entry.get("Checksum-Algorithm", "NONE")).upper())
    if algorithm is None:
        return None
    digest = hashlib.new(algorithm)
    remaining = member.size
    while remaining > 0:
        chunk = reader.read(min(READ, remaining))
        if not chunk:
            return "truncated inside the tar"
        digest.update(chunk)
        remaining -= len(chunk)
    if digest.hexdigest() != str(entry.get("Checksum", "")).lower():
        return f"{algorithm} checksum differs from backup_manifest's"
    return None


def check_tar_stream(
    storage: Storage, key: str, keys: Mapping[str, Any], manifest: ManifestCheck
) -> tuple[int, int, str, str]:
    """Stream one tar object (authenticated) through tarfile; record each file against the manifest.
    Returns (plaintext size, stored size, trailer digest, what it is of) like envelope.verify_object."""
    readback = envelope.Readback()
    chunks = envelope.get_object(storage, key, keys, readback=readback)
    reader = IterReader(chunks)
    prefix = tar_prefix(key)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]  # stream mode reads only read()
            for member in tar:
                if not member.isfile():
                    continue
                path = prefix + member.name.removeprefix("./")
                entry = manifest.files.get(path)
                if entry is None:
                    if not (path.startswith("pg_wal/") or path in _NOT_LISTED):
                        manifest.saw(path, f"in {key.rsplit('/', 1)[-1]} but not listed in backup_manifest")
                    continue
                fh = tar.extractfile(member)
                manifest.saw(path, _check_member(member, fh, entry))
    except tarfile.TarError as exc:
        raise IntegrityError(f"object {key} is not a readable tar: {exc}") from None
    for _ in chunks:  # drain the end-of-archive padding so the trailer (size + digest) is checked
        pass
    reader.read()
    info = storage.stat(key)
    return readback.size, info.size if info else 0, readback.sha256, readback.digest_of
