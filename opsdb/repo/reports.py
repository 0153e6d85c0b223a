"""Drill reports kept in the repository: <id>.json (the source of truth), <id>.md and <id>.html.

Reports are written through the envelope like every other object (so they are checksummed and,
when a key is configured, encrypted) and create-only: a report, once stored, is evidence and is
never replaced. Report ids sort by time (drill-YYYYMMDDTHHMMSSZ), so "the last N drills" is the
last N keys of a listing.
"""

from __future__ import annotations

from collections.abc import Mapping

from opsdb.errors import NotFound, UsageError
from opsdb.model.report import DrillReport
from opsdb.repo import layout
from opsdb.repo.envelope import Codec, get_object, put_object
from opsdb.storage.base import Storage
from opsdb.stream.crypto import EncryptionKey

FORMATS = ("json", "md", "html")


def store_report(
    storage: Storage, cluster: str, report: DrillReport, rendered: Mapping[str, bytes], codec: Codec
) -> list[str]:
    """Store the JSON document and its renderings; return the keys written (JSON first)."""
    keys = [layout.report_object(cluster, report.id, "json")]
    put_object(storage, keys[0], [report.to_json().encode()], codec, if_absent=True)
    for ext, data in rendered.items():
        if ext not in FORMATS or ext == "json":
            raise UsageError(f"unable to store report {report.id}: unknown rendering {ext!r}")
        key = layout.report_object(cluster, report.id, ext)
        put_object(storage, key, [data], codec, if_absent=True)
        keys.append(key)
    return keys


def report_ids(storage: Storage, cluster: str) -> list[str]:
    """Ids of the stored reports (those with a JSON document), oldest first."""
    prefix = layout.report_prefix(cluster)
    ids = []
    for info in storage.list(prefix):
        name = info.key[len(prefix) :]
        if name.endswith(".json") and "/" not in name:
            ids.append(name[: -len(".json")])
    return sorted(ids)


def load_report(storage: Storage, cluster: str, report_id: str, keys: Mapping[str, EncryptionKey]) -> DrillReport:
    data = load_rendered(storage, cluster, report_id, "json", keys)
    return DrillReport.from_json(data)


def load_rendered(storage: Storage, cluster: str, report_id: str, ext: str, keys: Mapping[str, EncryptionKey]) -> bytes:
    """The stored bytes of one rendering (json, md or html). NotFound names the report."""
    if ext not in FORMATS:
        raise UsageError(f"unknown report format {ext!r}: use json, md or html")
    if "/" in report_id or not report_id:
        raise UsageError(f"invalid report id {report_id!r}")
    key = layout.report_object(cluster, report_id, ext)
    try:
        return b"".join(get_object(storage, key, keys))
    except NotFound:
        raise NotFound(
            f"no drill report {report_id!r} ({ext}) for cluster {cluster!r}",
            hint="`opsdb report list` shows the stored reports",
        ) from None


def recent_reports(
    storage: Storage, cluster: str, keys: Mapping[str, EncryptionKey], *, limit: int = 20
) -> list[DrillReport]:
    """The last `limit` reports, newest first (each is read and checked through the envelope)."""
    ids = report_ids(storage, cluster)[-limit:] if limit > 0 else []
    return [load_report(storage, cluster, rid, keys) for rid in reversed(ids)]
