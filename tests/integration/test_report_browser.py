"""The drill report as a browser shows and prints it: headless Chromium (Debian's `chromium`, installed by
scripts/test.sh) renders the HTML, takes a screenshot, measures every text box in the DOM (no two overlap,
nothing wider than the page) and prints it to PDF on A4."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from opsdb.model.report import BackupRef, Check, DrillReport, Interval, RecoveryPoint, TimelinePicture
from opsdb.render.report import render_html
from tests.gate import missing
from tests.unit.test_report import T0, sample_report

pytestmark = pytest.mark.integration

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# appended to a copy of the report (the report itself has no scripts): writes every text box it finds
MEASURE = """<script>
const boxes = [];
for (const el of document.querySelectorAll("svg text, h1, h2, p, td, th, .card div, .verdict")) {
  const r = el.getBoundingClientRect();
  if (r.width && r.height) boxes.push({text: el.textContent.trim().slice(0, 60), svg: !!el.closest("svg"),
    x0: r.left, y0: r.top, x1: r.right, y1: r.bottom, leaf: el.tagName.toLowerCase() === "text"});
}
const pre = document.createElement("pre");
pre.id = "opsdb-boxes";
pre.textContent = JSON.stringify({boxes, scrollWidth: document.documentElement.scrollWidth,
                                  clientWidth: document.documentElement.clientWidth});
document.body.appendChild(pre);
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("chromium is not installed (scripts/test.sh installs Debian's chromium as root)")
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"  # a fresh profile per run
    argv = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def failed_report() -> DrillReport:
    """A failed drill after a failover: the primary's line (timeline 1) and a branch (timeline 2)."""
    base = sample_report(passed=False)
    wal = [
        Interval(T0, T0 + timedelta(minutes=20), "wal", "000000010000000000000001..000000010000000000000004"),
        Interval(T0 + timedelta(minutes=20), T0 + timedelta(minutes=22), "gap", "missing 000000010000000000000005"),
        Interval(
            T0 + timedelta(minutes=22),
            T0 + timedelta(minutes=48),
            "wal",
            "000000010000000000000006..00000001000000000000000C",
        ),
        Interval(
            T0 + timedelta(minutes=35),
            T0 + timedelta(minutes=47),
            "wal",
            "000000020000000000000009..00000002000000000000000B",
        ),
    ]
    backups = [
        *base.picture.backups,
        BackupRef(
            "20261121T094000Z", T0 + timedelta(minutes=40), T0 + timedelta(minutes=40, seconds=20), None, None, 2
        ),
    ]
    return dataclasses.replace(
        base,
        target_time=T0 + timedelta(minutes=47, seconds=15),
        recovered_time=T0 + timedelta(minutes=45, seconds=3),
        rpo_seconds=132.0,
        checks=[
            *base.checks[:2],
            Check("recovery point", "fail", "newest heartbeat 09:45:03, 2 min 12 s before the target"),
        ],
        recovery_point=RecoveryPoint(T0 + timedelta(minutes=45, seconds=3), None, "0/C000F28", 3),
        picture=TimelinePicture(backups, wal, T0 + timedelta(seconds=40), T0 + timedelta(minutes=48)),
        environment={**base.environment, "wal_source": "opsdb wal-fetch", "kept": False},
    )


def overlaps(boxes: list[dict]) -> list[tuple[str, str]]:
    texts = [b for b in boxes if b["svg"] and b["leaf"]]
    found = []
    for i, a in enumerate(texts):
        for b in texts[i + 1 :]:
            if (
                a["x0"] < b["x1"] - 0.5
                and b["x0"] < a["x1"] - 0.5
                and a["y0"] < b["y1"] - 0.5
                and b["y0"] < a["y1"] - 0.5
            ):
                found.append((a["text"], b["text"]))
    return found


@pytest.mark.parametrize("width", [1200, 794])  # a desktop window; A4's width at 96 dpi
@pytest.mark.parametrize("make", [sample_report, failed_report], ids=["passed", "failed-with-branches"])
def test_report_text_boxes_do_not_overlap(tmp_path, make, width):
    page = tmp_path / "measure.html"
    page.write_text(render_html(make()).replace("</body>", MEASURE + "</body>"))
    result = run_chromium(
        tmp_path, f"--window-size={width},2400", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()
    )
    match = re.search(r'<pre id="opsdb-boxes">(.*?)</pre>', result.stdout, re.S)
    assert match, result.stderr[-2000:]
    doc = json.loads(
        match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    )
    svg_texts = [b for b in doc["boxes"] if b["svg"]]
    assert len(svg_texts) > 20, "the timeline and phase pictures were not rendered"
    assert overlaps(doc["boxes"]) == []
    assert doc["scrollWidth"] <= doc["clientWidth"], "the page is wider than the window"
    assert all(b["x1"] <= width + 0.5 for b in doc["boxes"])


def test_failed_report_tells_the_story_and_draws_the_branches():
    html = render_html(failed_report())
    assert "replay stopped at 09:45:03, 2 min 12 s before the target" in html
    assert "TL 1" in html and "TL 2" in html and "drill branch: timeline 3" in html
    assert "WAL source" in html and "Scratch instance kept</td><td>no" in html


def test_report_screenshot_and_a4_print(tmp_path):
    report = tmp_path / "report.html"
    report.write_text(render_html(failed_report()))
    shot = tmp_path / "report.png"
    result = run_chromium(tmp_path, "--window-size=1200,1800", f"--screenshot={shot}", report.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = tmp_path / "report.pdf"
    result = run_chromium(tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", report.as_uri())
    assert pdf.exists(), result.stderr[-2000:]
    data = pdf.read_bytes()
    boxes = {(float(w), float(h)) for w, h in re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)}
    assert boxes and all(abs(w - 595.3) < 2 and abs(h - 841.9) < 2 for w, h in boxes), boxes  # A4, not Letter
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert 1 <= pages <= 3, pages
