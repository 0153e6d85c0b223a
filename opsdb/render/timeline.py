"""Inline SVG pictures for drill reports: the recovery timeline and the restore-phase bar.

Pure string building, no scripts, no external fonts: the SVG is pasted into the HTML as is.
The timeline has a lane of backups and one row of archived WAL per timeline (branches joined to the
line they left) on a UTC time axis, the recoverable window as a band, the drill's target as a dashed
line and the point reached as a solid line with the drill's own branch (its promoted scratch server)
leaving the primary's line there; the shaded band between target and point reached is the RPO, drawn
behind every label.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import escape

from opsdb.model.report import PHASE_LABELS, DrillReport, Interval

WIDTH = 1000
LEFT = 110  # room for the lane labels
RIGHT = 20
INNER = WIDTH - LEFT - RIGHT
ROW = 26  # one WAL row per timeline
CHAR_WIDTH = 6.4  # of 11 px text: enough to keep labels apart

PHASE_COLORS = {"plan": "#8250df", "fetch_extract": "#0969da", "wal_replay": "#bf8700", "checks": "#1a7f37"}
_FALLBACK_COLORS = ("#57606a", "#cf222e", "#116329", "#953800")

_TICK_STEPS = [  # seconds: 1 s .. 30 s, 1 min .. 30 min, 1 h .. 12 h, 1 day .. 30 days
    *(1, 2, 5, 10, 15, 30),
    *(60 * m for m in (1, 2, 5, 10, 15, 30)),
    *(3600 * h for h in (1, 2, 3, 6, 12)),
    *(86400 * d for d in (1, 2, 7, 14, 30)),
]


def _span(report: DrillReport) -> tuple[datetime, datetime] | None:
    times: list[datetime] = []
    pic = report.picture
    for b in pic.backups:
        times += [t for t in (b.start_time, b.stop_time) if t]
    for i in pic.wal:
        times += [i.start, i.end]
    times += [t for t in (pic.window_start, pic.window_end, report.target_time, report.recovered_time) if t]
    if not times:
        return None
    lo, hi = min(times), max(times)
    if hi - lo < timedelta(seconds=2):
        lo, hi = lo - timedelta(seconds=1), hi + timedelta(seconds=1)
    pad = (hi - lo) * 0.04
    return lo - pad, hi + pad


def _ticks(lo: datetime, hi: datetime) -> tuple[list[datetime], str]:
    seconds = (hi - lo).total_seconds()
    step = next((s for s in _TICK_STEPS if seconds / s <= 8), _TICK_STEPS[-1])
    epoch = lo.timestamp()
    first = (int(epoch // step) + 1) * step
    ticks: list[datetime] = []
    t = first
    while t < hi.timestamp() and len(ticks) < 20:
        ticks.append(datetime.fromtimestamp(t, UTC))
        t += step
    if seconds > 2 * 86400:
        fmt = "%m-%d %H:%M"
    elif step >= 60:
        fmt = "%H:%M"
    else:
        fmt = "%H:%M:%S"
    return ticks, fmt


def _timeline_of(interval: Interval) -> int | None:
    """The timeline an archived-WAL interval belongs to (its label starts with a segment name)."""
    match = re.match(r"([0-9A-F]{8})[0-9A-F]{16}", interval.label or "")
    return int(match.group(1), 16) if match else None


def _label_fits(spans: list[tuple[float, float]], x0: float, text: str) -> bool:
    x1 = x0 + CHAR_WIDTH * len(text)
    return all(x1 + 8 < a or x0 > b + 8 for a, b in spans)


def timeline_svg(report: DrillReport) -> str:
    span = _span(report)
    if span is None:
        return '<p class="sub">No timeline data (the drill stopped before the repository was read).</p>'
    lo, hi = span
    total = (hi - lo).total_seconds()

    def x(t: datetime) -> float:
        return round(LEFT + INNER * (t - lo).total_seconds() / total, 1)

    pic = report.picture
    # one WAL row per timeline: the restored backup's (the primary's line) first, branches below it
    main_tl = report.backup.timeline if report.backup and report.backup.timeline else None
    found = sorted({t for t in (_timeline_of(i) for i in pic.wal) if t is not None})
    timelines: list[int | None] = [main_tl] if main_tl in found else []
    timelines = timelines + [t for t in found if t != main_tl] or [main_tl]
    top, backup_y, wal_y = 34, 58, 112
    row = {tl: wal_y + ROW * n for n, tl in enumerate(timelines)}
    drill_y = wal_y + ROW * len(timelines) + 8
    axis_y = drill_y + 26
    height = axis_y + 64
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="Timeline of backups, archived WAL per timeline, the drill target, the point reached and the drill\'s branch">',
        '<defs><pattern id="gap" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#ffebe9"/><line x1="0" y1="0" x2="0" y2="6" stroke="#cf222e" stroke-width="3"/>'
        "</pattern></defs>",
    ]
    # the RPO band first: behind every lane and label (the "(restored)" label stays readable)
    target, reached = report.target_time, report.recovered_time
    if target and reached:
        rx0, rx1 = sorted((x(reached), x(target)))
        parts.append(
            f'<rect x="{rx0}" y="{top}" width="{max(rx1 - rx0, 1):.1f}" height="{axis_y - top}" fill="#fff8c5" opacity="0.8"/>'
        )
    parts += [
        f'<text x="8" y="{backup_y + 5}" font-size="13" fill="#59636e">Backups</text>',
        f'<text x="8" y="{wal_y + 5}" font-size="13" fill="#59636e">{"WAL" if len(timelines) > 1 else "WAL archive"}</text>',
        f'<line x1="{LEFT}" y1="{axis_y}" x2="{WIDTH - RIGHT}" y2="{axis_y}" stroke="#8c959f"/>',
    ]
    ticks, fmt = _ticks(lo, hi)
    for t in ticks:
        tx = x(t)
        parts.append(f'<line x1="{tx}" y1="{top}" x2="{tx}" y2="{axis_y + 4}" stroke="#eaeef2"/>')
        parts.append(
            f'<text x="{tx}" y="{axis_y + 18}" font-size="11" text-anchor="middle" fill="#59636e">{t.strftime(fmt)}</text>'
        )
    day = lo.strftime("%Y-%m-%d")
    parts.append(f'<text x="{LEFT}" y="{axis_y + 36}" font-size="11" fill="#59636e">UTC, {day}</text>')

    # recoverable window: a light band behind the lanes, its label between the lanes
    if pic.window_start and pic.window_end:
        wx0, wx1 = x(pic.window_start), x(pic.window_end)
        bottom = max(row.values()) if row else wal_y
        parts.append(
            f'<rect x="{wx0}" y="{top + 6}" width="{max(wx1 - wx0, 1):.1f}" height="{bottom - top + 10}" fill="#ddf4ff" opacity="0.6"/>'
        )
        parts.append(
            f'<text x="{wx1 - 4}" y="{backup_y + 28}" font-size="11" text-anchor="end" fill="#0969da">recoverable window</text>'
        )
    # WAL coverage, one row per timeline, each branch joined to the line it left
    for tl in timelines[1:] if len(timelines) > 1 else []:
        first = min((i.start for i in pic.wal if _timeline_of(i) == tl), default=None)
        if first is not None:
            bx = x(first)
            parts.append(
                f'<path d="M{bx - 14} {wal_y} L{bx} {row[tl]}" stroke="#4ac26b" stroke-width="2" fill="none"/>'
            )
    for tl in timelines if len(timelines) > 1 else []:
        parts.append(
            f'<text x="{LEFT - 8}" y="{row[tl] + 4}" font-size="11" text-anchor="end" fill="#59636e">TL {tl}</text>'
        )
    for i in pic.wal:
        y = row.get(_timeline_of(i), wal_y)
        ix0, ix1 = x(i.start), x(i.end)
        fill = "url(#gap)" if i.kind == "gap" else "#4ac26b"
        title = escape(i.label or ("missing WAL" if i.kind == "gap" else "archived WAL"))
        parts.append(
            f'<rect x="{ix0}" y="{y - 9}" width="{max(ix1 - ix0, 2):.1f}" height="18" rx="3" fill="{fill}">'
            f"<title>{title}</title></rect>"
        )
        if i.kind == "gap":
            parts.append(
                f'<text x="{(ix0 + ix1) / 2:.1f}" y="{y - 12}" font-size="11" text-anchor="middle" fill="#cf222e">gap</text>'
            )
    # backups lane: a bar from start to stop; the restored one darker and always labelled, others when room
    used = report.backup.id if report.backup else None
    ordered = sorted(pic.backups, key=lambda b: (b.id != used, b.start_time or b.stop_time or lo))
    labels: list[tuple[float, float]] = []
    for b in ordered:
        start, stop = b.start_time or b.stop_time, b.stop_time or b.start_time
        if start is None or stop is None:
            continue
        bx0, bx1 = x(start), x(stop)
        color = "#0550ae" if b.id == used else "#8c959f"
        parts.append(
            f'<rect x="{bx0}" y="{backup_y - 9}" width="{max(bx1 - bx0, 4):.1f}" height="18" rx="3" fill="{color}">'
            f"<title>backup {escape(b.id)}</title></rect>"
        )
        text = b.id + (" (restored)" if b.id == used else "")
        lx = min(bx0, WIDTH - RIGHT - CHAR_WIDTH * len(text))
        if b.id == used or _label_fits(labels, lx, text):
            parts.append(f'<text x="{lx:.1f}" y="{backup_y - 14}" font-size="11" fill="{color}">{escape(text)}</text>')
            labels.append((lx, lx + CHAR_WIDTH * len(text)))
    # where the drill left the primary's line: its scratch server promoted onto a new timeline
    if reached:
        rx = x(reached)
        parts.append(f'<line x1="{rx}" y1="{top}" x2="{rx}" y2="{axis_y}" stroke="#0969da" stroke-width="2.5"/>')
        new_tl = report.recovery_point.timeline
        branch = f"drill branch: timeline {new_tl} (scratch, promoted)" if new_tl else "drill branch (scratch)"
        end = min(rx + 60, WIDTH - RIGHT)
        parts.append(
            f'<path d="M{rx} {wal_y} L{rx + 14} {drill_y} L{end} {drill_y}" stroke="#0969da" stroke-width="2" '
            'stroke-dasharray="5 3" fill="none"/>'
        )
        bx = rx + 18 if rx + 18 + CHAR_WIDTH * len(branch) < WIDTH - RIGHT else rx - 6
        anchor = "start" if bx > rx else "end"
        parts.append(
            f'<text x="{bx:.1f}" y="{drill_y + 15}" font-size="11" text-anchor="{anchor}" fill="#0969da">{escape(branch)}</text>'
        )
        parts.append(_flag(rx, top - 6, f"reached {reached.strftime('%H:%M:%S.%f')[:-3]}", "#0969da"))
    if target:
        tx = x(target)
        parts.append(
            f'<line x1="{tx}" y1="{top}" x2="{tx}" y2="{axis_y}" stroke="#bc4c00" stroke-width="2" stroke-dasharray="6 4"/>'
        )
        parts.append(
            _flag(tx, top - 22 if reached else top - 6, f"target {target.strftime('%H:%M:%S.%f')[:-3]}", "#bc4c00")
        )
    parts.append(_legend(axis_y + 58))
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(y: float) -> str:
    """Key to the marks, on the axis caption line, right-aligned."""
    items = [
        ('<rect x="{x}" y="{y0}" width="14" height="10" rx="2" fill="#0550ae"/>', "backup restored"),
        ('<rect x="{x}" y="{y0}" width="14" height="10" rx="2" fill="#8c959f"/>', "other backup"),
        ('<rect x="{x}" y="{y0}" width="14" height="10" rx="2" fill="#4ac26b"/>', "archived WAL"),
        ('<rect x="{x}" y="{y0}" width="14" height="10" rx="2" fill="url(#gap)"/>', "missing WAL"),
        (
            '<line x1="{xm}" y1="{y0}" x2="{xm}" y2="{y1}" stroke="#bc4c00" stroke-width="2" stroke-dasharray="3 2"/>',
            "target",
        ),
        ('<line x1="{xm}" y1="{y0}" x2="{xm}" y2="{y1}" stroke="#0969da" stroke-width="2.5"/>', "point reached"),
        ('<rect x="{x}" y="{y0}" width="14" height="10" fill="#fff8c5" stroke="#d4a72c"/>', "RPO"),
    ]
    out = []
    x: float = LEFT
    for mark, label in items:
        out.append(mark.format(x=x, xm=x + 7, y0=y - 9, y1=y + 1))
        out.append(f'<text x="{x + 18}" y="{y}" font-size="11" fill="#59636e">{label}</text>')
        x += 24 + 6.2 * len(label) + 10
    return "".join(out)


def _flag(x: float, y: float, text: str, color: str) -> str:
    """A label anchored so it stays inside the picture."""
    anchor = "end" if x > WIDTH - 160 else ("start" if x < LEFT + 40 else "middle")
    return f'<text x="{x}" y="{y}" font-size="12" font-weight="600" text-anchor="{anchor}" fill="{color}">{escape(text)}</text>'


def phases_svg(phases: dict[str, float]) -> str:
    total = sum(phases.values())
    if total <= 0:
        return '<p class="sub">No phase timings (the drill stopped before restoring).</p>'
    height = 86
    parts = [f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-label="Restore phases">']
    x = 0.0
    for n, (name, secs) in enumerate(phases.items()):
        w = WIDTH * secs / total
        color = PHASE_COLORS.get(name, _FALLBACK_COLORS[n % len(_FALLBACK_COLORS)])
        label = PHASE_LABELS.get(name, name)
        parts.append(
            f'<rect x="{x:.1f}" y="4" width="{max(w, 0.5):.1f}" height="34" fill="{color}">'
            f"<title>{escape(label)}: {secs:.3f} s</title></rect>"
        )
        if w > 70:
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="26" font-size="12" text-anchor="middle" fill="#fff">{secs:.1f} s</text>'
            )
        lx = 8 + n * (WIDTH / max(len(phases), 1))
        parts.append(f'<rect x="{lx:.1f}" y="54" width="12" height="12" fill="{color}"/>')
        parts.append(
            f'<text x="{lx + 18:.1f}" y="65" font-size="12" fill="#1f2328">{escape(label)}: {secs:.2f} s '
            f"({100 * secs / total:.0f}%)</text>"
        )
        x += w
    parts.append("</svg>")
    return "\n".join(parts)
