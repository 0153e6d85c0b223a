"""Human text for `replicas check` (pure: the report -> a status line and tables)."""

from __future__ import annotations

from opsdb.model.replication import ReplicasReport
from opsdb.model.units import human_bytes
from opsdb.render.text import table


def _bytes(n: int | None) -> str | None:
    return None if n is None else human_bytes(n)


def _secs(s: float | None) -> str | None:
    return None if s is None else f"{s:.1f}s"


def perfdata(report: ReplicasReport) -> str:
    """Monitoring-plugin performance data: 'label'=value[UOM];warn;crit per replica and slot."""
    t = report.thresholds
    parts = []
    for r in report.replicas:
        if r.lag_bytes is not None:
            parts.append(f"'{r.name}_lag_bytes'={r.lag_bytes}B;{t.warning_bytes};{t.critical_bytes};0")
        if r.lag_seconds is not None:
            parts.append(f"'{r.name}_lag_seconds'={r.lag_seconds:.3f}s;{t.warning_seconds:g};{t.critical_seconds:g};0")
    for s in report.slots:
        if s.retained_bytes is not None:
            parts.append(f"'slot_{s.slot_name}_retained_bytes'={s.retained_bytes}B;{t.slot_retained_warning_bytes};;0")
    return " ".join(parts)


def render_replicas(report: ReplicasReport) -> str:
    """The status line first (what a monitoring system shows, with perfdata), then replicas, senders, slots."""
    perf = perfdata(report)
    lines = [f"REPLICAS {report.status.value}: {report.summary}" + (f" | {perf}" if perf else "")]
    if report.replicas:
        lines.append("")
        rows: list[tuple[str | None, ...]] = [
            (
                r.name,
                r.status.value,
                r.state,
                r.replay_lsn,
                _bytes(r.lag_bytes),
                _secs(r.lag_seconds),
                "; ".join(r.reasons),
            )
            for r in report.replicas
        ]
        lines += table(("replica", "status", "state", "replay_lsn", "lag", "lag_time", "why"), rows)
    if report.senders:
        lines.append("")
        rows = [
            (
                s.application_name or "-",
                s.client_addr,
                s.status.value,
                s.state,
                s.sync_state,
                _bytes(s.replay_lag_bytes),
                _secs(s.replay_lag_seconds),
            )
            for s in report.senders
        ]
        lines += table(
            ("standby (primary's view)", "client", "status", "state", "sync", "replay_lag", "lag_time"), rows
        )
    if report.slots:
        lines.append("")
        rows = [
            (
                s.slot_name,
                s.slot_type,
                s.status.value,
                "yes" if s.active else "no",
                s.wal_status,
                _bytes(s.retained_bytes),
                "; ".join(s.reasons),
            )
            for s in report.slots
        ]
        lines += table(("slot", "type", "status", "active", "wal_status", "retained", "why"), rows)
    if report.primary_lsn:
        lines += ["", f"primary LSN {report.primary_lsn}"]
    return "\n".join(lines)
