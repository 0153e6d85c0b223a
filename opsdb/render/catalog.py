"""Catalog records as human text: the `backups list` table, `backups show`, and one-line summaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opsdb.model.catalog import BackupRecord, RestorePlan, format_time
from opsdb.model.units import human_bytes
from opsdb.render.text import table


def _ratio(size: int, stored: int) -> str:
    return f"{stored / size:.1%}" if size else "-"


def _rate(size: int, seconds: float) -> str:
    return f"{human_bytes(size / seconds)}/s" if seconds > 0 else "-"  # IEC like every size opsdb prints


def summary_line(verb: str, record: BackupRecord, seconds: float) -> str:
    """'backup 20261121T101500Z-F complete: 1.4 GiB, stored 70.1 MiB (4.8%), 7.9 s, 181.5 MiB/s'."""
    return (
        f"{verb} {record.id} complete: {human_bytes(record.size_bytes)}, stored {human_bytes(record.stored_bytes)} "
        f"({_ratio(record.size_bytes, record.stored_bytes)}), {seconds:.1f} s, {_rate(record.size_bytes, seconds)}"
    )


def backups_table(records: Sequence[BackupRecord]) -> str:
    if not records:
        return "no complete backups or dumps in the repository"
    header = ("ID", "KIND", "PARENT", "STOP (UTC)", "TL", "START LSN", "STOP LSN", "SIZE", "STORED", "ENC", "DBS")
    rows = []
    for r in records:
        rows.append(
            (
                r.id,
                r.kind,
                r.parent or "-",  # an incremental's chain: follow PARENT up to a physical (full) backup
                (format_time(r.stop_time) or "-").replace("T", " ")[:19],
                str(r.timeline) if r.timeline is not None else "-",
                str(r.start_lsn) if r.start_lsn else "-",
                str(r.stop_lsn) if r.stop_lsn else "-",
                human_bytes(r.size_bytes),
                human_bytes(r.stored_bytes),
                "yes" if r.encrypted else "no",
                str(len(r.databases)) if r.kind == "logical" else "-",
            )
        )
    return "\n".join(table(header, rows))


def backup_details(r: BackupRecord) -> str:
    lines = [
        f"backup        {r.id}",
        f"cluster       {r.cluster}",
        f"kind          {r.kind}",
        f"status        {r.status}",
        f"start         {format_time(r.start_time)}",
        f"stop          {format_time(r.stop_time)}  ({r.duration.total_seconds():.1f} s)",
        f"size          {human_bytes(r.size_bytes)} ({r.size_bytes:,} bytes)",
        f"stored        {human_bytes(r.stored_bytes)} ({_ratio(r.size_bytes, r.stored_bytes)})",
        f"compression   {r.compression}"
        + (f" level {r.compression_level}" if r.compression_level is not None else "")
        + (f", by the {'server' if r.compressed_on == 'server' else 'opsdb client'}" if r.compressed_on else ""),
        f"encryption    {'AES-256-GCM, key ' + (r.key_id or '?') if r.encrypted else 'none'}",
    ]
    if r.is_physical:
        if r.parent:
            lines.append(f"parent        {r.parent} (incremental: restored combined with its chain)")
        lines += [
            f"postgresql    {r.pg_version or '?'} (system identifier {r.system_identifier or '?'})",
            f"timeline      {r.timeline}",
            f"wal           {r.start_lsn} .. {r.stop_lsn}"
            + ("  (included in the backup)" if r.wal_included else "  (from the WAL archive)"),
            f"from standby  {'yes' if r.from_standby else 'no'}",
        ]
        for t in r.tablespaces:
            lines.append(f"tablespace    {t.name} (oid {t.oid}) at {t.location}")
    else:
        lines.append(f"postgresql    {r.pg_version or '?'}")
        lines.append(f"databases     {', '.join(d.name for d in r.databases) or '-'}")
        if r.globals_object:
            lines.append(
                f"globals       {r.globals_object} ({'with' if r.with_passwords else 'without'} role passwords)"
            )
    lines.append(f"taken by      opsdb {r.opsdb_version or '?'} on {r.host or '?'}")
    lines.append("objects:")
    for o in r.objects:
        lines.append(
            f"  {o.name:<28} {human_bytes(o.size):>10}  stored {human_bytes(o.stored_size):>10}  sha256 {o.sha256[:16]}"
            + ("" if o.sha256_of == "plaintext" else f" (of the {o.sha256_of} bytes)")
        )
    return "\n".join(lines)


ARCHIVE_MODE_TEXT = {
    "off": "off: the restored copy does not archive (archive_mode=off; --archive-mode keep to replace the primary)",
    "keep": "keep: the restored copy archives as the backup's configuration says (it replaces the primary)",
    "standby": "as configured (a standby archives only with archive_mode=always)",
}


def restore_plan_text(plan: RestorePlan) -> str:
    lines = [
        f"restore backup {plan.backup.id} (stopped {format_time(plan.backup.stop_time)}, LSN {plan.backup.stop_lsn})",
        f"  into      {plan.target_dir}",
        f"  target    {plan.target}",
        f"  read      {human_bytes(plan.bytes_to_read)} from the repository, write {human_bytes(plan.bytes_to_write)}",
    ]
    if plan.chain:
        lines.append(f"  chain     {' -> '.join(plan.chain)} (combined by pg_combinebackup into the target)")
        lines.append(f"  staging   {human_bytes(plan.staging_bytes)} in {plan.staging_dir} (removed afterwards)")
    for step in plan.steps:
        what = f"{step.backup_id}/{step.object}" if step.backup_id else step.object
        lines.append(f"  extract   {what} -> {step.dest} ({human_bytes(step.stored_size)} stored)")
    for oid, where in sorted(plan.tablespace_map.items()):
        lines.append(f"  tablespace {oid} -> {where}")
    if plan.recovery_settings:
        settings = ", ".join(f"{k}={v}" for k, v in plan.recovery_settings.items())
        lines.append(f"  recovery  {settings}" + (f" + {plan.signal_file}" if plan.signal_file else ""))
    lines.append(f"  archive   {ARCHIVE_MODE_TEXT.get(plan.archive_mode, plan.archive_mode)}")
    if plan.start:
        lines.append(f"  then start the server on port {plan.port}")
    return "\n".join(lines)


def restore_result_text(doc: dict[str, Any], seconds: float, size: int) -> str:
    """The rate is of the writing (what the progress bar showed), not of the time a started server replayed."""
    point = doc.get("recovery_point")
    reached = f"; reached LSN {point.get('lsn')} at {point.get('time') or 'unknown time'}" if point else ""
    sync = doc.get("sync")
    synced = f"; synced ({sync['method']}, {sync['seconds']:.1f} s)" if sync else "; not synced (--no-sync)"
    replay = (doc.get("replay_seconds") or 0.0) if point else 0.0
    took = f"{seconds:.1f} s" + (f" (replay {replay:.1f} s)" if replay else "")
    return (
        f"restored backup {doc['backup_id']} into {doc['target_dir']}: {human_bytes(size)} in {took}, "
        f"{_rate(size, seconds - replay)}{synced}{reached}"
    )
