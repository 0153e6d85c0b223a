"""opsdb info as JSON (SPEC fields first) and as text for an operator."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opsdb.model.chain import chains
from opsdb.model.target import format_time
from opsdb.model.units import human_bytes


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def info_json(info: Any) -> dict[str, Any]:
    """SPEC: {"cluster", "recoverable_from", "recoverable_to", "timeline", "backups": N, "wal_gaps": [...]};
    the rest is additive detail."""
    from_time, from_lsn = info.recoverable_from
    to_time, to_lsn = info.recoverable_to
    gaps = [
        {"timeline": t.timeline, "from": first, "to": last, "segments": n}
        for t in info.timelines
        for first, last, n in t.gaps
    ]
    return {
        "cluster": info.cluster,
        "recoverable_from": _time(from_time),
        "recoverable_to": _time(to_time),
        "timeline": info.timeline,
        "newest_timeline": info.newest_timeline,
        "live_timeline": info.live_timeline,
        "timeline_choice": info.timeline_choice,
        "backups": len(info.backups),
        "wal_gaps": gaps,
        "recoverable_from_lsn": _str(from_lsn),
        "recoverable_to_lsn": _str(to_lsn),
        "wal_stored_bytes": info.stored_bytes,
        "chains": [{"full": full, "incrementals": incs} for full, incs in chains(info.backups)],
        "timelines": [
            {
                "timeline": t.timeline,
                "parent": t.parent,
                "switch_lsn": _str(t.switch_lsn),
                "backups": t.backups,
                "primary_line": t.primary_line,
                "live": t.live,
                "note": t.note,
                "wal_first": t.first_segment,
                "wal_last": t.last_segment,
                "wal_segments": t.segments,
                "wal_gaps": [{"from": a, "to": b, "segments": n} for a, b, n in t.gaps],
                "recoverable_from": _time(t.window.from_time),
                "recoverable_to": _time(t.window.to_time),
                "recoverable_from_lsn": _str(t.window.from_lsn),
                "recoverable_to_lsn": _str(t.window.to_lsn),
            }
            for t in info.timelines
        ],
    }


def info_text(info: Any) -> str:
    from_time, from_lsn = info.recoverable_from
    to_time, to_lsn = info.recoverable_to
    lines = [
        f"cluster {info.cluster}: {len(info.backups)} complete backup(s); restore and drill follow {info.timeline_choice}"
    ]
    if from_lsn is None:
        lines.append("  recoverable window: none (no complete backup with its WAL archived)")
    else:
        lines.append(
            f"  recoverable window: {_time(from_time) or '?'} ({from_lsn}) .. {_time(to_time) or '?'} ({to_lsn})"
        )
    lines.append(f"  WAL archive: {human_bytes(info.stored_bytes)} stored")
    for full, incrementals in chains(info.backups):
        lines.append(f"  chain: {full} (full) + {len(incrementals)} incremental: {', '.join(incrementals)}")
    for t in info.timelines:
        branch = f", branched from {t.parent} at {t.switch_lsn}" if t.parent else ""
        marks = [f"{t.backups} backup(s)"]
        if t.live:
            marks.append("the primary is live on it")
        if t.note:
            marks.append(t.note)
        lines.append(f"  timeline {t.timeline}{branch}: {', '.join(marks)}")
        if t.first_segment:
            lines.append(f"    WAL {t.first_segment} .. {t.last_segment} ({t.segments} segments)")
        else:
            lines.append("    WAL: none archived")
        for first, last, n in t.gaps:
            lines.append(f"    GAP: {first} .. {last} missing ({n} segment{'s' if n > 1 else ''})")
        if t.window.from_lsn is not None:
            lines.append(
                f"    recoverable: {_time(t.window.from_time) or '?'} .. {_time(t.window.to_time) or '?'} "
                f"(LSN {t.window.from_lsn} .. {t.window.to_lsn})"
            )
    if info.partials:
        lines.append(f"  partial segments kept from promotions: {', '.join(info.partials)}")
    return "\n".join(lines)
