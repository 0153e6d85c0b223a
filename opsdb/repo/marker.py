"""The repository marker and the cluster markers (pgBackRest calls the latter a stanza).

    opsdb-repository.json             {"format", "created", "created_by", "capabilities": {...}}
    clusters/<c>/opsdb-cluster.json   {"format", "cluster", "system_identifier", "created", "created_by",
                                       "previous": [{"system_identifier", "until"}]}

Both are plain JSON (readable without a key) and created create-only by the first backup, dump or
wal-push. They are what makes "not archived" an answer opsdb can give: wal-fetch exits 1 only when
the cluster's marker (or, in a repository written before markers, the cluster's catalog or archive)
proves that the repository is present and readable and holds that cluster; a missing, empty, unmounted
or mistyped repository, or an unknown cluster, is an error that stops recovery instead. The cluster
marker also pins the cluster's one system identifier: writers from another server are refused, and
`opsdb reinit` is the deliberate step that moves a cluster to a new identity (after initdb or pg_upgrade).

`capabilities` records what the store was found to honour (e.g. conditional writes); its keys are
owned by the code that probes them and unknown keys are kept, so older readers never drop them.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from opsdb import __version__
from opsdb.errors import Conflict, IntegrityError, NotFound, OperationFailed, RepositoryUnavailable
from opsdb.repo import layout
from opsdb.storage.base import Storage, object_url


class RepositoryMissing(RepositoryUnavailable):
    """The repository, or the cluster inside it, is not there: nothing can be answered as "not archived"."""


class IdentityMismatch(Conflict):
    """A server with another system identifier than the cluster's marker tried to write."""


@dataclasses.dataclass(frozen=True)
class RepositoryMarker:
    format: int
    created: str
    created_by: str
    capabilities: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields of newer writers, kept

    def to_dict(self) -> dict[str, Any]:
        doc = dict(self.extra)
        doc.update(format=self.format, created=self.created, created_by=self.created_by)
        doc["capabilities"] = dict(self.capabilities)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RepositoryMarker:
        known = {"format", "created", "created_by", "capabilities"}
        caps = doc.get("capabilities") or {}
        return cls(
            int(doc["format"]),
            str(doc.get("created", "")),
            str(doc.get("created_by", "")),
            dict(caps) if isinstance(caps, dict) else {},
            {k: v for k, v in doc.items() if k not in known},
        )


@dataclasses.dataclass(frozen=True)
class ClusterMarker:
    cluster: str
    system_identifier: str
    created: str
    created_by: str
    format: int = layout.FORMAT_VERSION
    previous: tuple[dict[str, str], ...] = ()  # identities retired by `opsdb reinit`, oldest first
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc = dict(self.extra)
        doc.update(
            format=self.format,
            cluster=self.cluster,
            system_identifier=self.system_identifier,
            created=self.created,
            created_by=self.created_by,
            previous=[dict(p) for p in self.previous],
        )
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ClusterMarker:
        known = {"format", "cluster", "system_identifier", "created", "created_by", "previous"}
        return cls(
            cluster=str(doc["cluster"]),
            system_identifier=str(doc["system_identifier"]),
            created=str(doc.get("created", "")),
            created_by=str(doc.get("created_by", "")),
            format=int(doc.get("format", layout.FORMAT_VERSION)),
            previous=tuple({str(k): str(v) for k, v in p.items()} for p in doc.get("previous") or ()),
            extra={k: v for k, v in doc.items() if k not in known},
        )


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the repository marker ---------------------------------------------------------------------


def read_repository_marker(storage: Storage) -> RepositoryMarker | None:
    doc = _read_doc(storage, layout.REPO_MARKER)
    if doc is None:
        return None
    try:
        return RepositoryMarker.from_dict(doc)
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"object {layout.REPO_MARKER} is not a repository marker") from None


def ensure_repository_marker(
    storage: Storage, created: str | None = None, capabilities: dict[str, Any] | None = None
) -> RepositoryMarker:
    """Create opsdb-repository.json once (create-only); refuse a repository of a newer format."""
    marker = RepositoryMarker(layout.FORMAT_VERSION, created or now_text(), f"opsdb {__version__}", capabilities or {})
    try:
        _write_doc(storage, layout.REPO_MARKER, marker.to_dict(), create=True)
        return marker
    except Conflict:
        pass
    found = read_repository_marker(storage)
    if found is None:  # deleted between the two calls: the next writer recreates it
        return marker
    if found.format > layout.FORMAT_VERSION:
        raise OperationFailed(
            f"the repository has format {found.format}, newer than this opsdb supports ({layout.FORMAT_VERSION})",
            hint="upgrade opsdb before writing to this repository",
        )
    return found


def update_capabilities(storage: Storage, capabilities: dict[str, Any]) -> RepositoryMarker:
    """Merge `capabilities` into the repository marker (created when absent) and rewrite it."""
    current = ensure_repository_marker(storage)
    merged = dataclasses.replace(current, capabilities={**current.capabilities, **capabilities})
    if merged != current:
        _write_doc(storage, layout.REPO_MARKER, merged.to_dict(), create=False)
    return merged


# --- the cluster marker ------------------------------------------------------------------------


def read_cluster_marker(storage: Storage, cluster: str) -> ClusterMarker | None:
    key = layout.cluster_marker(cluster)
    doc = _read_doc(storage, key)
    if doc is None:
        return None
    try:
        marker = ClusterMarker.from_dict(doc)
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"object {key} is not a cluster marker") from None
    if marker.cluster != cluster:
        raise IntegrityError(f"object {key} is the marker of cluster {marker.cluster!r}, not of {cluster!r}")
    return marker


def ensure_cluster_marker(storage: Storage, cluster: str, system_identifier: int | str, *, what: str) -> ClusterMarker:
    """The cluster's marker, created (with the repository marker) when this is its first write.

    A marker naming another system identifier refuses the write (`what` says which, for the message)."""
    sysid = str(system_identifier)
    found = read_cluster_marker(storage, cluster)
    if found is None:
        ensure_repository_marker(storage)
        marker = ClusterMarker(cluster, sysid, now_text(), f"opsdb {__version__}")
        try:
            _write_doc(storage, layout.cluster_marker(cluster), marker.to_dict(), create=True)
            return marker
        except Conflict:  # another writer was first: check against theirs
            found = read_cluster_marker(storage, cluster)
            if found is None:
                raise
    check_identity(found, sysid, what=what, url=storage.url)
    return found


def check_identity(marker: ClusterMarker, system_identifier: int | str, *, what: str, url: str) -> None:
    sysid = str(system_identifier)
    if marker.system_identifier == sysid:
        return
    retired = any(p.get("system_identifier") == sysid for p in marker.previous)
    raise IdentityMismatch(
        f"unable to {what}: the server has system identifier {sysid}, but cluster {marker.cluster!r} in "
        f"{url} belongs to system identifier {marker.system_identifier}"
        + (" (this identity was retired by `opsdb reinit`)" if retired else ""),
        hint="another cluster archives under this name, or this server was re-created (initdb, pg_upgrade): "
        "use its own [clusters] name, or run `opsdb reinit` to move the cluster to the new identity",
    )


def reinit_cluster(
    storage: Storage, cluster: str, system_identifier: int | str
) -> tuple[ClusterMarker | None, ClusterMarker]:
    """Move the cluster to a new system identifier, keeping the old one in `previous`.
    Returns (before, after); before is None when the cluster had no marker yet."""
    sysid = str(system_identifier)
    before = read_cluster_marker(storage, cluster)
    if before is None:
        return None, ensure_cluster_marker(storage, cluster, sysid, what="initialise the cluster")
    if before.system_identifier == sysid:
        return before, before
    retired = {"system_identifier": before.system_identifier, "until": now_text()}
    after = dataclasses.replace(before, system_identifier=sysid, previous=(*before.previous, retired))
    _write_doc(storage, layout.cluster_marker(cluster), after.to_dict(), create=False)
    return before, after


# --- proof for "not archived" ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArchiveProof:
    """The repository and the cluster were seen: `marker` when it has one (legacy: None)."""

    marker: ClusterMarker | None
    how: str

    @property
    def system_identifier(self) -> int | None:
        return int(self.marker.system_identifier) if self.marker else None

    @property
    def system_identifiers(self) -> frozenset[int]:
        """The cluster's identifier and those retired by `opsdb reinit` (old backups restore with them)."""
        if self.marker is None:
            return frozenset()
        old = (p.get("system_identifier", "") for p in self.marker.previous)
        return frozenset(int(s) for s in (self.marker.system_identifier, *old) if s.isdigit())


def prove_archive(storage: Storage, cluster: str) -> ArchiveProof:
    """Prove that the repository is there and holds `cluster`, or raise RepositoryMissing naming
    what is missing. One GET when the cluster has a marker; a repository written before markers is
    proven by its repository marker plus the cluster's catalog or WAL archive (listings)."""
    marker = read_cluster_marker(storage, cluster)
    if marker is not None:
        return ArchiveProof(marker, f"cluster marker {layout.cluster_marker(cluster)}")
    for prefix in (layout.catalog_prefix(cluster), layout.wal_prefix(cluster)):
        if next(iter(storage.list(prefix)), None) is not None:
            return ArchiveProof(None, f"objects under {prefix} (a repository written before cluster markers)")
    where = object_url(storage.url, layout.cluster_marker(cluster))
    if read_repository_marker(storage) is not None:
        raise RepositoryMissing(
            f"repository {storage.url} has no cluster {cluster!r}: {where} does not exist and nothing is archived for it",
            hint="check --cluster / [clusters] (a typo?); a cluster appears with its first wal-push or backup",
        )
    raise RepositoryMissing(
        f"no opsdb repository at {storage.url}: {object_url(storage.url, layout.REPO_MARKER)} and {where} do not exist "
        "(missing, empty, not mounted, or a mistyped path or prefix)",
        hint="check [repository] url and that the file system or bucket is there; "
        "a repository is created by the first wal-push or backup",
    )


# --- plain JSON objects --------------------------------------------------------------------------


def _read_doc(storage: Storage, key: str) -> dict[str, Any] | None:
    try:
        with storage.open(key) as fh:
            raw = fh.read()
    except NotFound:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"object {key} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"object {key} is not a JSON object")
    return doc


def _write_doc(storage: Storage, key: str, doc: dict[str, Any], *, create: bool) -> None:
    storage.put(key, [json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"], if_absent=create)
