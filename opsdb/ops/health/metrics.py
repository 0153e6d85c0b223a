"""`opsdb metrics`: what Prometheus should alert on, collected from the repository, the scheduler's
history and the replicas, then written atomically as a textfile-collector .prom file.

Per cluster: last successful backup and dump (time, size, duration), count, last archived WAL and its
age, the recoverable window, the last drill (result, time, RTO, RPO), replica lag and slot retention.
Per scheduled job: last run time, exit code, success, duration. A source that cannot be read does not
stop the others: opsdb_metrics_source_up{cluster,source} says which one failed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdb.errors import OpsdbError, UsageError
from opsdb.model.report import DrillReport
from opsdb.render.metrics import Sample, render
from opsdb.repo import wal as repo_wal

if TYPE_CHECKING:
    from opsdb.config import Settings


def _get(obj: Any, name: str) -> Any:
    value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return getattr(value, "value", value)


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp() if isinstance(value, datetime) else None


def backup_samples(cluster: str, records: Iterable[Any]) -> list[Sample]:
    out: list[Sample] = []
    complete = [r for r in records if (_get(r, "status") or "complete") == "complete"]
    for kind in ("physical", "logical"):
        mine = [r for r in complete if (_get(r, "kind") or "physical") == kind and _ts(_get(r, "stop_time"))]
        labels = {"cluster": cluster, "kind": kind}
        out.append(Sample("opsdb_backups", len(mine), labels, "Complete backups in the catalog."))
        if not mine:
            continue
        last = max(mine, key=lambda r: _ts(_get(r, "stop_time")) or 0.0)
        stop, start = _ts(_get(last, "stop_time")) or 0.0, _ts(_get(last, "start_time"))
        out.append(
            Sample(
                "opsdb_backup_last_success_timestamp_seconds", stop, labels, "When the newest complete backup finished."
            )
        )
        if start is not None:
            out.append(
                Sample(
                    "opsdb_backup_last_duration_seconds",
                    max(0.0, stop - start),
                    labels,
                    "Duration of the newest complete backup.",
                )
            )
        for field, name, text in (
            ("size_bytes", "opsdb_backup_last_size_bytes", "Plaintext size of the newest complete backup."),
            (
                "stored_bytes",
                "opsdb_backup_last_stored_bytes",
                "Stored (compressed, encrypted) size of the newest complete backup.",
            ),
        ):
            if _get(last, field) is not None:
                out.append(Sample(name, float(_get(last, field)), labels, text))
    return out


def wal_samples(cluster: str, files: Sequence[repo_wal.ArchivedFile], now: datetime) -> list[Sample]:
    segments = [f for f in files if f.wal.kind in ("segment", "partial")]
    if not segments:
        return []
    newest = max(segments, key=lambda f: (f.info.mtime, f.wal.name))
    labels = {"cluster": cluster}
    return [
        Sample(
            "opsdb_wal_last_archived_timestamp_seconds",
            newest.info.mtime,
            labels,
            "When the newest WAL file was archived.",
        ),
        Sample(
            "opsdb_wal_last_archived_age_seconds",
            max(0.0, now.timestamp() - newest.info.mtime),
            labels,
            "Age of the newest archived WAL file.",
        ),
        Sample(
            "opsdb_wal_last_archived_info",
            1,
            {**labels, "segment": newest.wal.name, "timeline": str(newest.wal.timeline)},
            "The newest archived WAL file.",
        ),
        Sample("opsdb_wal_archived_files", len(segments), labels, "Archived WAL segments."),
    ]


def window_samples(cluster: str, info: Any) -> list[Sample]:
    labels = {"cluster": cluster}
    start, _ = info.recoverable_from
    end, _ = info.recoverable_to
    out = [
        Sample(
            "opsdb_wal_gaps",
            sum(len(t.gaps) for t in info.timelines),
            labels,
            "Gaps in the WAL archive (all timelines).",
        )
    ]
    if start is not None:
        out.append(
            Sample(
                "opsdb_recoverable_from_timestamp_seconds",
                start.timestamp(),
                labels,
                "Earliest point reachable by PITR.",
            )
        )
    if end is not None:
        out.append(
            Sample("opsdb_recoverable_to_timestamp_seconds", end.timestamp(), labels, "Latest point reachable by PITR.")
        )
    if start is not None and end is not None:
        out.append(
            Sample(
                "opsdb_recoverable_window_seconds",
                max(0.0, (end - start).total_seconds()),
                labels,
                "Length of the recoverable window.",
            )
        )
    return out


def drill_samples(cluster: str, reports: Sequence[DrillReport]) -> list[Sample]:
    """reports: newest first."""
    if not reports:
        return []
    labels = {"cluster": cluster}
    last = reports[0]
    out = [
        Sample(
            "opsdb_drill_last_timestamp_seconds",
            last.finished_at.timestamp(),
            labels,
            "When the last restore drill finished.",
        ),
        Sample("opsdb_drill_last_success", 1 if last.passed else 0, labels, "1 if the last restore drill passed."),
    ]
    passed = next((r for r in reports if r.passed), None)
    if passed is not None:
        out.append(
            Sample(
                "opsdb_drill_last_success_timestamp_seconds",
                passed.finished_at.timestamp(),
                labels,
                "When a restore drill last passed.",
            )
        )
    if last.rto_seconds is not None:
        out.append(
            Sample("opsdb_drill_rto_seconds", last.rto_seconds, labels, "Recovery time measured by the last drill.")
        )
    if last.rpo_seconds is not None:
        out.append(
            Sample(
                "opsdb_drill_rpo_seconds", last.rpo_seconds, labels, "Recovery point gap measured by the last drill."
            )
        )
    return out


def replica_samples(cluster: str, report: Any) -> list[Sample]:
    labels = {"cluster": cluster}
    out = [
        Sample(
            "opsdb_replicas_status",
            report.status.exit_code,
            labels,
            "Replication status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        )
    ]
    for r in report.replicas:
        rl = {**labels, "replica": r.name}
        out.append(Sample("opsdb_replica_up", 1 if r.reachable else 0, rl, "1 if the replica answered."))
        if r.lag_bytes is not None:
            out.append(Sample("opsdb_replica_lag_bytes", r.lag_bytes, rl, "Replay lag behind the primary in bytes."))
        if r.lag_seconds is not None:
            out.append(Sample("opsdb_replica_lag_seconds", r.lag_seconds, rl, "Replay lag in seconds."))
    for s in report.slots:
        if s.retained_bytes is not None:
            sl = {**labels, "slot": s.slot_name}
            out.append(
                Sample(
                    "opsdb_replication_slot_retained_bytes", s.retained_bytes, sl, "WAL a replication slot holds back."
                )
            )
    return out


def job_samples(records: Iterable[Any]) -> list[Sample]:
    """From the scheduler's history: the newest run of each job, and its newest success."""
    latest: dict[str, Any] = {}
    success: dict[str, Any] = {}
    for r in records:
        if _get(r, "status") == "skipped":
            continue
        latest[_get(r, "job")] = r
        if _get(r, "status") == "ok":
            success[_get(r, "job")] = r
    out: list[Sample] = []
    for job, r in sorted(latest.items()):
        labels = {"job": job}
        end = _ts(_get(r, "end"))
        if end is not None:
            out.append(Sample("opsdb_job_last_run_timestamp_seconds", end, labels, "When the job's last run ended."))
        out.append(
            Sample(
                "opsdb_job_last_success",
                1 if _get(r, "status") == "ok" else 0,
                labels,
                "1 if the job's last run succeeded.",
            )
        )
        code = _get(r, "exit_code")
        out.append(
            Sample("opsdb_job_last_exit_code", -1 if code is None else code, labels, "Exit code of the job's last run.")
        )
        out.append(
            Sample(
                "opsdb_job_last_duration_seconds",
                _get(r, "duration_seconds") or 0.0,
                labels,
                "Duration of the job's last run.",
            )
        )
        ok_end = _ts(_get(success[job], "end")) if job in success else None
        if ok_end is not None:
            out.append(
                Sample("opsdb_job_last_success_timestamp_seconds", ok_end, labels, "When the job last succeeded.")
            )
    return out


def _source(out: list[Sample], cluster: str, source: str, build: Callable[[], list[Sample]]) -> None:
    """Run build() at once (so the callers' lambdas may close over loop variables); a failure marks the source down."""
    try:
        samples = build()
        up = 1
    except OpsdbError:
        samples, up = [], 0
    out.extend(samples)
    out.append(
        Sample("opsdb_metrics_source_up", up, {"cluster": cluster, "source": source}, "1 if the source could be read.")
    )


def collect_from_settings(
    settings: Settings,
    clusters: Sequence[str],
    *,
    job_records: Iterable[Any] = (),
    now: datetime | None = None,
    replicas_fn: Callable[..., Any] | None = None,
) -> str:
    """The exposition text for the named clusters plus the scheduler's jobs."""
    now = now or datetime.now(UTC)
    samples: list[Sample] = []
    for name in clusters:
        samples.extend(_cluster(settings, name, now, replicas_fn))
    samples.extend(job_samples(job_records))
    samples.append(
        Sample("opsdb_metrics_generated_timestamp_seconds", now.timestamp(), {}, "When this file was written.")
    )
    return render(samples)


def _cluster(settings: Settings, name: str, now: datetime, replicas_fn: Callable[..., Any] | None) -> list[Sample]:
    from opsdb.ops.replicas import lag as ops_replicas
    from opsdb.ops.repository.info import cluster_info
    from opsdb.ops.wal.push_fetch import wal_repo_from_settings
    from opsdb.repo import catalog as repo_catalog
    from opsdb.repo.reports import recent_reports

    cfg = settings.clusters[name]
    repo = wal_repo_from_settings(settings, name)
    samples: list[Sample] = []
    records: list[Any] = []

    def catalog() -> list[Sample]:
        records.extend(repo_catalog.list_backups(repo.storage, name, repo.keys))
        return backup_samples(name, records)

    _source(samples, name, "catalog", catalog)
    _source(samples, name, "wal", lambda: wal_samples(name, repo_wal.list_archive(repo.storage, name), now))
    _source(samples, name, "window", lambda: window_samples(name, cluster_info(repo, records)))
    _source(
        samples, name, "drills", lambda: drill_samples(name, recent_reports(repo.storage, name, repo.keys, limit=10))
    )
    if cfg.replicas:
        measure = replicas_fn or ops_replicas.collect_replicas_report
        pairs = [(r.name, r.conninfo) for r in cfg.replicas]
        limits = ops_replicas.thresholds_for(cfg)
        _source(samples, name, "replicas", lambda: replica_samples(name, measure(cfg.conninfo, pairs, limits)))
    return samples


def write_textfile(path: str | os.PathLike[str], text: str) -> Path:
    """Write atomically: a temp file in the same directory, fsync, rename (node_exporter never sees half a file)."""
    target = Path(path)
    if target.suffix != ".prom":
        raise UsageError(f"textfile {target} must end in .prom (node_exporter's textfile collector reads only *.prom)")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"unable to write {target}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
