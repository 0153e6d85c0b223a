"""Human summaries for `pgbouncer generate|check|status` (pure: result dicts -> text)."""

from __future__ import annotations

from typing import Any


def render_generate(doc: dict[str, Any]) -> str:
    sizing = doc["sizing"]
    lines = [f"wrote {doc['ini_path']}"]
    if doc["userlist_path"]:
        lines.append(f"wrote {doc['userlist_path']} ({len(doc['users'] or [])} users, mode 0600)")
    lines.append(f"target PgBouncer {doc['pgbouncer_version']}; databases: {', '.join(doc['databases'])}")
    lines.append(
        f"default_pool_size {sizing['default_pool_size']}, max_db_connections {sizing['max_db_connections']}, "
        f"worst case {sizing['worst_case_total']} of {sizing['usable']} usable server connections"
    )
    lines += [f"note: {n}" for n in doc["notes"]]
    return "\n".join(lines)


def render_check(doc: dict[str, Any]) -> str:
    lines = [f"{f['level'].upper():<8} {f['message']}" for f in doc["findings"]]
    if doc["worst_case_connections"] is not None:
        lines.append(
            f"pools can open {doc['worst_case_connections']} of {doc['usable_connections']} usable server connections"
        )
    loaded = {True: "loaded", False: "FAILED to load", None: "not loaded"}[doc["loaded"]]
    lines.append(f"{loaded}: {doc['load_detail']}")
    lines.append(f"{'OK' if doc['ok'] else 'PROBLEMS'}: {doc['ini']} (PgBouncer {doc['pgbouncer_version']})")
    return "\n".join(lines)
