"""Every key and prefix of the repository, and the format version, in one place.

docs/repository-format.md describes this layout; tests/docs checks the two agree.
Keys are relative to the repository root (the storage URL's path/prefix).
"""

from __future__ import annotations

FORMAT_VERSION = 1

REPO_MARKER = "opsdb-repository.json"  # {"format": 1, "created": ...}; written once by the first writer


def cluster_prefix(cluster: str) -> str:
    return f"clusters/{cluster}/"


def cluster_marker(cluster: str) -> str:
    """The cluster's marker (repo/marker.py): its system identifier; proof that the cluster exists."""
    return f"clusters/{cluster}/opsdb-cluster.json"


# --- physical backups and logical dumps -------------------------------------------------------
# A backup's objects live under backups/<id>/; it is committed only when catalog/<id>.json exists.


def backup_prefix(cluster: str, backup_id: str) -> str:
    return f"clusters/{cluster}/backups/{backup_id}/"


def backup_object(cluster: str, backup_id: str, name: str) -> str:
    """A data object of a backup, e.g. 'base.tar', 'pg_tblspc-16385.tar', 'backup_manifest', or 'pg_dump/app.dump'."""
    return f"clusters/{cluster}/backups/{backup_id}/{name}"


def catalog_prefix(cluster: str) -> str:
    return f"clusters/{cluster}/catalog/"


def catalog_entry(cluster: str, backup_id: str) -> str:
    """The commit marker: the backup's full metadata, written last with create-only semantics."""
    return f"clusters/{cluster}/catalog/{backup_id}.json"


def deleting_marker(cluster: str, backup_id: str) -> str:
    """Written by retention before a backup's objects are deleted, so a crash mid-delete is finished next run."""
    return f"clusters/{cluster}/deleting/{backup_id}.json"


def deleting_prefix(cluster: str) -> str:
    return f"clusters/{cluster}/deleting/"


# --- WAL archive ------------------------------------------------------------------------------
# Segments are grouped by timeline and log number (the first 16 hex digits) so listings stay small.


def wal_prefix(cluster: str) -> str:
    return f"clusters/{cluster}/wal/"


def wal_object(cluster: str, wal_name: str) -> str:
    """'000000010000000A000000FF' -> clusters/c/wal/000000010000000A/000000010000000A000000FF.
    History files ('00000002.history') go under wal/history/."""
    if wal_name.endswith(".history"):
        return f"clusters/{cluster}/wal/history/{wal_name}"
    return f"clusters/{cluster}/wal/{wal_name[:16]}/{wal_name}"


# --- locks, reports, scheduler state ------------------------------------------------------------


def lock_object(cluster: str, kind: str) -> str:
    """kind: 'backup' or 'dump' (retention holds both while it deletes)."""
    return f"clusters/{cluster}/locks/{kind}.lock"


def report_prefix(cluster: str) -> str:
    return f"clusters/{cluster}/reports/"


def report_object(cluster: str, report_id: str, ext: str) -> str:
    """ext: 'json' (the source of truth), 'md', 'html'."""
    return f"clusters/{cluster}/reports/{report_id}.{ext}"


# --- appended by the backups work -----------------------------------------------------------------


def lock_takeover_marker(cluster: str, kind: str, generation: str) -> str:
    """Create-only claim on one expired lock (generation = digest of its bytes): of several runs that
    find the same stale lock, only the one that creates this marker may delete and replace it."""
    return f"clusters/{cluster}/locks/{kind}.takeover-{generation}"


def locks_prefix(cluster: str) -> str:
    return f"clusters/{cluster}/locks/"


BACKUP_MANIFEST_OBJECT = "opsdb-manifest.json"  # backups/<id>/opsdb-manifest.json: the record, before the entry


# --- what an object is, by its key (the identity envelope version 3 binds it to) ----------------


def object_identity(key: str) -> tuple[str, str, str]:
    """(cluster, kind, logical name) of a key: ('main', 'wal', '000000010000000A000000FF'),
    ('main', 'backup', '<id>/base.tar'), ('main', 'catalog', '<id>'), ('main', 'report', '<id>.json');
    any other key is ('', 'object', key)."""
    parts = key.split("/")
    if len(parts) >= 4 and parts[0] == "clusters":
        cluster, area, rest = parts[1], parts[2], parts[3:]
        if area == "wal":
            return cluster, "wal", rest[-1]
        if area == "backups" and len(rest) >= 2:
            return cluster, "backup", "/".join(rest)
        if area == "catalog" and len(rest) == 1 and rest[0].endswith(".json"):
            return cluster, "catalog", rest[0].removesuffix(".json")
        if area == "reports" and len(rest) == 1:
            return cluster, "report", rest[0]
        return cluster, area, "/".join(rest)
    return "", "object", key
