"""LSNs, timelines and WAL file names: parsing, segment arithmetic, history files, gap detection.

WAL segment names are TTTTTTTTXXXXXXXXYYYYYYYY: timeline, then the segment number split into a
"log" part and a "seg" part, where seg counts up to 0x100000000 / wal_segment_size (256 for 16 MiB).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from opsdb.errors import UsageError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024

_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.partial$")
_BACKUP_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


@dataclasses.dataclass(frozen=True, order=True)
class Lsn:
    """A WAL location, ordered and printable as PostgreSQL prints it (16/B374D848)."""

    value: int

    @classmethod
    def parse(cls, text: str) -> Lsn:
        match = _LSN_RE.match(text.strip())
        if not match:
            raise UsageError(f"invalid LSN {text!r}: expected the form 16/B374D848")
        return cls((int(match.group(1), 16) << 32) | int(match.group(2), 16))

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __sub__(self, other: Lsn) -> int:
        return self.value - other.value

    def segment_number(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
        return self.value // segment_size


def segments_per_log(segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return 0x100000000 // segment_size


def segment_name(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per = segments_per_log(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def segment_of(timeline: int, lsn: Lsn, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The segment file holding lsn on timeline."""
    return segment_name(timeline, lsn.segment_number(segment_size), segment_size)


@dataclasses.dataclass(frozen=True)
class WalName:
    """A parsed archive file name. kind: segment, partial, backup, history."""

    name: str
    kind: str
    timeline: int
    segno: int | None  # None for history files

    @property
    def is_segment(self) -> bool:
        return self.kind == "segment"


def parse_wal_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalName:
    """Parse a WAL archive file name; UsageError for anything PostgreSQL would not archive."""
    per = segments_per_log(segment_size)
    if m := _SEGMENT_RE.match(name):
        tli, log, seg = (int(g, 16) for g in m.groups())
        return WalName(name, "segment", tli, log * per + seg)
    if m := _PARTIAL_RE.match(name):
        base = parse_wal_name(m.group(1), segment_size)
        return WalName(name, "partial", base.timeline, base.segno)
    if m := _BACKUP_RE.match(name):
        base = parse_wal_name(m.group(1), segment_size)
        return WalName(name, "backup", base.timeline, base.segno)
    if m := _HISTORY_RE.match(name):
        return WalName(name, "history", int(m.group(1), 16), None)
    raise UsageError(
        f"invalid WAL file name {name!r}: expected a segment (24 hex digits), .partial, .backup or .history file"
    )


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One line of a timeline history file: `parent_tli` ended at `switch_lsn`."""

    parent_timeline: int
    switch_lsn: Lsn
    reason: str


def parse_history(text: str) -> list[HistoryEntry]:
    """Parse a NNNNNNNN.history file (lines: parentTLI <tab> switchpoint <tab> reason)."""
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise UsageError(f"malformed timeline history line: {raw!r}")
        entries.append(HistoryEntry(int(parts[0]), Lsn.parse(parts[1]), parts[2] if len(parts) > 2 else ""))
    return entries


@dataclasses.dataclass(frozen=True)
class SegmentRange:
    """A contiguous run of archived segments on one timeline, [first, last] inclusive."""

    timeline: int
    first: int
    last: int

    def names(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[str, str]:
        return segment_name(self.timeline, self.first, segment_size), segment_name(
            self.timeline, self.last, segment_size
        )


def contiguous_ranges(segments: Iterable[WalName]) -> dict[int, list[SegmentRange]]:
    """Group archived segments per timeline into contiguous ranges; the gaps are between ranges."""
    by_tli: dict[int, list[int]] = {}
    for wal in segments:
        if wal.kind == "segment" and wal.segno is not None:
            by_tli.setdefault(wal.timeline, []).append(wal.segno)
    result: dict[int, list[SegmentRange]] = {}
    for tli, numbers in sorted(by_tli.items()):
        numbers = sorted(set(numbers))
        ranges: list[SegmentRange] = []
        start = prev = numbers[0]
        for n in numbers[1:]:
            if n != prev + 1:
                ranges.append(SegmentRange(tli, start, prev))
                start = n
            prev = n
        ranges.append(SegmentRange(tli, start, prev))
        result[tli] = ranges
    return result


def gaps(ranges: list[SegmentRange]) -> list[tuple[int, int]]:
    """Missing segment numbers between consecutive ranges of one timeline, as [first, last] pairs."""
    return [(a.last + 1, b.first - 1) for a, b in zip(ranges, ranges[1:], strict=False)]
