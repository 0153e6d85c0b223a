"""DrillReport -> Markdown, and -> one self-contained HTML file (inline CSS, inline SVG, no scripts).

The HTML is meant to be attached to an audit ticket or opened by an on-call engineer from a CI
artifact: everything it needs is inside the file, it prints on paper, and it reads top-down:
verdict, the two numbers (RPO, RTO), the picture, then the evidence (checks), then the details.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from opsdb.model.report import PHASE_LABELS, DrillReport, HistoryRow, format_time
from opsdb.model.units import human_bytes
from opsdb.render.text import table
from opsdb.render.timeline import phases_svg, timeline_svg


def duration(seconds: float | None) -> str:
    """'0.42 s', '12.3 s', '4 min 05 s', '2 h 03 min' — precise where it matters, short otherwise."""
    if seconds is None:
        return "n/a"
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def when(value: datetime | None) -> str:
    if value is None:
        return "n/a"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _target_text(report: DrillReport) -> str:
    if report.target_kind == "latest":
        return f"latest archived point (drill started {when(report.target_time)})"
    kind = "random point in the recoverable window" if report.target_kind == "random" else "requested time"
    return f"{when(report.target_time)} ({kind})"


def _verdict(report: DrillReport) -> str:
    if report.passed:
        return (
            f"restorable to {when(report.recovered_time)}; RPO {duration(report.rpo_seconds)}, "
            f"RTO {duration(report.rto_seconds)}; {len(report.checks)} checks passed"
        )
    return "failed: " + "; ".join(_why_failed(report))


def _why_failed(report: DrillReport) -> list[str]:
    """A failed drill's reasons in words: where replay stopped against the target, what each failed
    check found, and the error that stopped the drill."""
    reasons = []
    target, reached = report.target_time, report.recovered_time
    if target and reached and reached < target:
        reasons.append(
            f"replay stopped at {reached.astimezone(UTC):%H:%M:%S}, {duration((target - reached).total_seconds())} "
            "before the target"
        )
    elif target and reached is None:
        reasons.append("no point was reached (no heartbeat recovered)")
    reasons += [f"{c.name}: {c.detail}" if c.detail else c.name for c in report.failed_checks]
    if report.error:
        reasons.append(f"the drill stopped early: {report.error}")
    return reasons or ["the drill stopped before its checks"]


def _facts(report: DrillReport) -> list[tuple[str, str]]:
    b = report.backup
    rows = [
        ("Cluster", report.cluster),
        ("Target", _target_text(report)),
        ("Point reached", when(report.recovered_time)),
        ("RPO (target - point reached)", duration(report.rpo_seconds)),
        ("RTO (sum of the phases)", duration(report.rto_seconds)),
        ("Backup restored", f"{b.id} (taken {when(b.stop_time)})" if b else "none"),
    ]
    if report.wal and report.wal.first:
        w = report.wal
        rows.append(("WAL replayed", f"{w.first} .. {w.last} ({w.segments} segments, timeline {w.timeline})"))
    rows.append(("Bytes read from the repository", f"{human_bytes(report.bytes_read)} ({report.bytes_read:,} B)"))
    rows.append(("Drill ran", f"{when(report.started_at)} to {when(report.finished_at)}"))
    return rows


def _details(report: DrillReport) -> list[tuple[str, str]]:
    p = report.recovery_point
    rows = [
        ("Newest heartbeat recovered", when(p.heartbeat_time)),
        ("Last replayed transaction", when(p.replay_time)),
        ("Replay LSN", p.lsn or "n/a"),
        ("Timeline after promotion", str(p.timeline) if p.timeline is not None else "n/a"),
    ]
    b = report.backup
    if b:
        rows += [
            ("Backup start / stop LSN", f"{b.start_lsn or '?'} / {b.stop_lsn or '?'} (timeline {b.timeline})"),
            ("Backup size (plain / stored)", f"{_size(b.size_bytes)} / {_size(b.stored_bytes)}"),
        ]
    for key, value in report.environment.items():
        shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        rows.append((_ENV_LABELS.get(key, key.replace("_", " ").capitalize()), shown))
    rows.append(("Report schema version", str(report.schema_version)))
    return rows


_ENV_LABELS = {
    "opsdb_version": "opsdb version",
    "provider": "Scratch provider",
    "postgresql": "PostgreSQL (scratch server)",
    "host": "Host",
    "repository": "Repository",
    "scratch_dir": "Scratch directory",
    "scratch_port": "Scratch port",
    "kept": "Scratch instance kept",
    "wal_source": "WAL source",
}


def _size(n: int | None) -> str:
    return "n/a" if n is None else human_bytes(n)


# --- Markdown ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: DrillReport) -> str:
    word = "PASS" if report.passed else "FAIL"
    out = [f"# Restore drill {report.id}: {word}", "", f"**{word}: {_md_cell(_verdict(report))}**", ""]
    if report.error:
        out += [f"> Drill stopped early: {_md_cell(report.error)}", ""]
    out += ["| | |", "| --- | --- |"]
    out += [f"| {k} | {_md_cell(v)} |" for k, v in _facts(report)]
    out += ["", "## Checks", "", "| check | result | detail |", "| --- | --- | --- |"]
    for c in report.checks:
        mark = "PASS" if c.passed else "**FAIL**"
        out.append(f"| {_md_cell(c.name)} | {mark} | {_md_cell(c.detail)} |")
    total = sum(report.phases.values()) or 1.0
    out += ["", "## Restore phases", "", "| phase | seconds | share |", "| --- | ---: | ---: |"]
    for name, secs in report.phases.items():
        out.append(f"| {PHASE_LABELS.get(name, name)} | {secs:.3f} | {100 * secs / total:.0f}% |")
    out.append(f"| **RTO** | **{sum(report.phases.values()):.3f}** | |")
    out += ["", "## Timeline", ""]
    out += [f"- {when(t)}: {what}" for t, what in _events(report)]
    out += ["", "## Details", "", "| | |", "| --- | --- |"]
    out += [f"| {k} | {_md_cell(v)} |" for k, v in _details(report)]
    out.append("")
    return "\n".join(out)


def _events(report: DrillReport) -> list[tuple[datetime, str]]:
    events: list[tuple[datetime, str]] = []
    used = report.backup.id if report.backup else None
    for b in report.picture.backups:
        if b.stop_time:
            events.append((b.stop_time, f"backup {b.id} consistent" + (" (restored)" if b.id == used else "")))
    for i in report.picture.wal:
        if i.kind == "gap":
            events.append((i.start, f"WAL gap starts ({i.label})" if i.label else "WAL gap starts"))
    if report.picture.window_start:
        events.append((report.picture.window_start, "recoverable window opens"))
    if report.picture.window_end:
        events.append((report.picture.window_end, "newest archived point"))
    if report.recovered_time:
        events.append((report.recovered_time, "point reached by the drill"))
    if report.target_time:
        events.append((report.target_time, "drill target"))
    return sorted(events, key=lambda e: e[0])


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
:root { --pass:#1a7f37; --fail:#cf222e; --ink:#1f2328; --mute:#59636e; --line:#d1d9e0; --soft:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
       max-width: 1080px; margin: 24px auto; padding: 0 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.sub { color: var(--mute); margin: 0 0 16px; }
.verdict { border-radius: 8px; padding: 14px 18px; color: #fff; font-size: 18px; font-weight: 600; }
.verdict.pass { background: var(--pass); } .verdict.fail { background: var(--fail); }
.verdict small { display: block; font-weight: 400; font-size: 14px; opacity: .95; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: var(--soft); }
.card .k { color: var(--mute); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 22px; font-weight: 600; } .card .n { color: var(--mute); font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; }
td.k { color: var(--mute); width: 32%; } td.mono, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
.st { font-weight: 700; white-space: nowrap; } .st.pass { color: var(--pass); } .st.fail { color: var(--fail); }
tr.fail td { background: #ffebe9; }
svg { width: 100%; height: auto; display: block; }
svg text { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
.error { border-left: 4px solid var(--fail); background: #ffebe9; padding: 8px 12px; margin: 12px 0; }
footer { color: var(--mute); font-size: 12px; margin: 32px 0 8px; }
@page { size: A4; margin: 12mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; }
  .verdict, .card, tr.fail td, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section, table, svg, .cards { break-inside: avoid; }
  h2 { break-after: avoid; }
}
@media (max-width: 720px) { .cards { grid-template-columns: repeat(2, 1fr); } }
"""


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f'<tr><td class="k">{escape(k)}</td><td>{escape(v)}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def _cards(report: DrillReport) -> str:
    b = report.backup
    cards = [
        ("RPO", duration(report.rpo_seconds), "target minus the point reached"),
        ("RTO", duration(report.rto_seconds), "plan + fetch + replay + checks"),
        (
            "Point reached",
            when(report.recovered_time)[11:] if report.recovered_time else "n/a",
            when(report.recovered_time)[:10] if report.recovered_time else "no heartbeat recovered",
        ),
        ("Read", human_bytes(report.bytes_read), f"backup {b.id}" if b else "no backup"),
    ]
    items = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div><div class="n">{escape(n)}</div></div>'
        for k, v, n in cards
    )
    return f'<div class="cards">{items}</div>'


def _checks_table(report: DrillReport) -> str:
    rows = []
    for c in report.checks:
        cls = "pass" if c.passed else "fail"
        mark = "&#10003; pass" if c.passed else "&#10007; FAIL"
        rows.append(
            f'<tr class="{cls}"><td>{escape(c.name)}</td><td class="st {cls}">{mark}</td><td>{escape(c.detail)}</td></tr>'
        )
    if not rows:
        rows.append('<tr class="fail"><td colspan="3">no checks ran</td></tr>')
    return "<table><tr><th>check</th><th>result</th><th>detail</th></tr>" + "".join(rows) + "</table>"


def render_html(report: DrillReport) -> str:
    cls = "pass" if report.passed else "fail"
    word = "PASS" if report.passed else "FAIL"
    error = f'<div class="error">Drill stopped early: {escape(report.error)}</div>' if report.error else ""
    generated = report.environment.get("opsdb_version", "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Restore drill {escape(report.id)}: {word}</title>
<style>{_CSS}</style></head>
<body>
<h1>Restore drill: {escape(report.cluster)}</h1>
<p class="sub mono">{escape(report.id)} &middot; {escape(when(report.started_at))}</p>
<div class="verdict {cls}">{word}<small>{escape(_verdict(report))}</small></div>
{error}
{_cards(report)}
<section><h2>Timeline</h2>
{timeline_svg(report)}
</section>
<section><h2>Restore phases (RTO {escape(duration(report.rto_seconds))})</h2>
{phases_svg(report.phases)}
</section>
<section><h2>Checks</h2>
{_checks_table(report)}
</section>
<section><h2>What was restored</h2>
{_kv_table(_facts(report))}
</section>
<section><h2>Details</h2>
{_kv_table(_details(report))}
</section>
<footer>Generated by opsdb {escape(str(generated))} from the JSON report (schema version {report.schema_version}),
the source of truth. Times are UTC.</footer>
</body></html>
"""


# --- history (report list) ----------------------------------------------------------------------


def render_history_text(rows: list[HistoryRow], stats: dict[str, Any]) -> str:
    """A table of the last drills, newest first, with a one-line trend summary."""
    if not rows:
        return "no drill reports in the repository yet (run `opsdb drill`)"
    header = ("report", "started (UTC)", "result", "target", "RPO", "RTO", "backup / failed checks")
    cells = [
        (
            r.id,
            (format_time(r.started_at) or "-")[:19].replace("T", " "),
            r.result.upper(),
            r.target_kind,
            duration(r.rpo_seconds),
            duration(r.rto_seconds),
            ", ".join(r.failed) if r.failed else (r.backup_id or ""),
        )
        for r in rows
    ]
    lines = table(header, cells, right={4, 5})
    rto, rpo = stats["rto_seconds"], stats["rpo_seconds"]
    lines.append("")
    lines.append(
        f"{stats['passed']}/{stats['drills']} passed; RTO min/median/max {duration(rto['min'])} / "
        f"{duration(rto['median'])} / {duration(rto['max'])}; RPO median {duration(rpo['median'])}, max {duration(rpo['max'])}"
    )
    return "\n".join(lines)
