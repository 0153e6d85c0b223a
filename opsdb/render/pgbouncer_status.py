"""Human text for `opsdb pgbouncer status` (pure: the result dict -> lines), plugin style: the
first line is "PGBOUNCER <STATUS> - <worst detail> | perfdata", then one line per check and the pools."""

from __future__ import annotations

from typing import Any

from opsdb.render.text import table

_RANK = {"OK": 0, "WARNING": 1, "UNKNOWN": 2, "CRITICAL": 3}
POOL_COLUMNS = (
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "sv_active",
    "sv_idle",
    "sv_used",
    "maxwait",
    "pool_mode",
)


def _perfdata(doc: dict[str, Any]) -> str:
    parts = [f"waiting_clients={doc['waiting_clients']}", f"max_wait={doc['max_wait_seconds']:.3f}s"]
    if doc.get("used_clients") is not None:
        parts.append(f"used_clients={doc['used_clients']}")
    return " ".join(parts)


def render_status(doc: dict[str, Any]) -> str:
    checks = doc["checks"]
    worst = max(checks, key=lambda c: _RANK[c["status"]]) if checks else None
    headline = f"PGBOUNCER {doc['status']}"
    if worst is not None and worst["status"] != "OK":
        headline += f" - {worst['detail']}"
    elif doc.get("version"):
        headline += f" - {doc['version']}"
    lines = [f"{headline} | {_perfdata(doc)}"]
    lines += [f"{c['status']:<8} {c['name']:<8} {c['detail']}" for c in checks]
    pools = [p for p in doc.get("pools", []) if p.get("database") != "pgbouncer"]
    if pools:
        lines.append("")
        lines += table(POOL_COLUMNS, [tuple(p.get(k) for k in POOL_COLUMNS) for p in pools])
    return "\n".join(lines)
