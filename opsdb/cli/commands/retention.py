"""opsdb retention apply."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opsdb.cli import output


def render(doc: dict[str, Any]) -> str:
    """Every backup and dump with keep/delete and the rules that decided it; every WAL range that goes."""
    verb = "would delete" if doc["dry_run"] else "deleted"
    lines = [
        f"retention for cluster {doc['cluster']} at {doc['now']}"
        + (" (dry run: nothing changed)" if doc["dry_run"] else "")
    ]
    for kind in ("backups", "dumps"):
        for d in doc[kind]:
            action = "keep  " if d["action"] == "keep" else ("DELETE" if not doc["dry_run"] else "delete")
            lines.append(f"  {action} {kind[:-1]:<6} {d['id']}  ended {d['stop_time']}  ({', '.join(d['rules'])})")
    for w in doc["wal"]:
        lines.append(f"  {verb} WAL {w['first']} .. {w['last']} ({w['files']} files): {w['reason']}")
    for x in doc["locked"]:
        lines.append(f"  locked {x['kind']} {x['id']}: Object Lock keeps it until {x['until']}")
    for backup_id in doc["resumed"]:
        lines.append(f"  finished the interrupted deletion of {backup_id}")
    s = doc["summary"]
    lines.append(
        f"{verb} {s['backups_deleted']} backups, {s['dumps_deleted']} dumps, {s['wal_files_deleted']} WAL files"
        + (f"; {s['locked']} locked" if s["locked"] else "")
    )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    retention = typer.Typer(help="Apply retention policies.", no_args_is_help=True)

    @retention.command("apply")
    def apply(
        ctx: typer.Context,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print what would be deleted; change nothing.")
        ] = False,
    ) -> None:
        """Delete what the retention policy no longer keeps.

        Applies the cluster's retention policy to backups, dumps and WAL.
        """
        from opsdb.ops.retention import apply as ops_retention

        state = ctx.obj
        name, _ = state.cluster()
        result = ops_retention.apply_from_settings(state.settings, name, dry_run=dry_run)
        doc = result.to_dict()
        output.emit(state, doc, lambda: render(doc))

    app.add_typer(retention, name="retention")
