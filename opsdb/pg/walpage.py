"""What a WAL file says about itself: the long page header of a segment and a timeline history
file's shape, checked against the name the file is stored under (pg_control: pg/control.py).

These checks need no key and no binding: they read the content PostgreSQL wrote, so they also catch
a swapped, replayed or foreign segment in a repository written before objects were bound to their
names (envelope version 3). The first page of every segment (and of a .partial) starts with
XLogLongPageHeaderData, little-endian on every platform PostgreSQL ships for:

    xlp_magic u16 | xlp_info u16 | xlp_tli u32 | xlp_pageaddr u64 | xlp_rem_len u32 | pad u32 |
    xlp_sysid u64 | xlp_seg_size u32 | xlp_xlog_blcksz u32                           (40 bytes)
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Collection

from opsdb.errors import IntegrityError, UsageError
from opsdb.model.lsn import Lsn, WalName, parse_history, parse_wal_name

LONG_HEADER_SIZE = 40
XLP_LONG_HEADER = 0x0002
_LONG_HEADER = struct.Struct("<HHIQI4xQII")


@dataclasses.dataclass(frozen=True)
class SegmentHeader:
    timeline: int
    page_address: int
    system_identifier: int
    segment_size: int


def parse_segment_header(head: bytes) -> SegmentHeader | None:
    """The long page header at the start of a segment; None when `head` is not one."""
    if len(head) < LONG_HEADER_SIZE:
        return None
    _magic, info, tli, pageaddr, _rem, sysid, seg_size, _blcksz = _LONG_HEADER.unpack_from(head)
    if not info & XLP_LONG_HEADER or seg_size == 0 or seg_size & (seg_size - 1):
        return None
    return SegmentHeader(tli, pageaddr, sysid, seg_size)


def read_segment_header(path: str) -> SegmentHeader | None:
    """The long page header of the segment file at path; None when it does not start with one.
    OSError when the file cannot be read."""
    with open(path, "rb") as fh:
        return parse_segment_header(fh.read(LONG_HEADER_SIZE))


def segment_mismatch(name: str, head: bytes, system_identifiers: Collection[int] = ()) -> str | None:
    """Why the segment (or .partial) whose first bytes are `head` is not the file `name`; None when it is.

    Its page address must be the name's segment start, its system identifier the cluster's (when
    known: any of `system_identifiers`), and its timeline the name's or an older one: the first page of a new timeline's first
    segment is copied from its parent, so it carries the parent's timeline."""
    wal = parse_wal_name(name)
    if wal.kind not in ("segment", "partial") or wal.segno is None:
        return None
    header = parse_segment_header(head)
    if header is None:
        return f"{name} does not start with a WAL segment header"
    per = 0x100000000 // header.segment_size
    log, seg = int(name[8:16], 16), int(name[16:24], 16)
    expected_address = (log * per + seg) * header.segment_size
    found = (
        f"timeline {header.timeline}, segment at {Lsn(header.page_address)}, "
        f"system identifier {header.system_identifier}"
    )
    if seg >= per or header.page_address != expected_address:
        return f"{name} holds the segment at {Lsn(header.page_address)}, not {Lsn(expected_address)} ({found})"
    if header.timeline > wal.timeline:
        return f"{name} holds WAL of timeline {header.timeline}, newer than its name's {wal.timeline} ({found})"
    if system_identifiers and header.system_identifier not in system_identifiers:
        return (
            f"{name} was written by another cluster: system identifier {header.system_identifier}, "
            f"expected {' or '.join(map(str, sorted(system_identifiers)))}"
        )
    return None


def history_mismatch(name: str, content: bytes) -> str | None:
    """Why a timeline history file is not `name`'s: the history of timeline T lists only ancestors
    (parent timelines below T, in increasing order, at increasing switch points)."""
    wal: WalName = parse_wal_name(name)
    if wal.kind != "history":
        return None
    try:
        entries = parse_history(content.decode("utf-8"))
    except (UnicodeDecodeError, UsageError) as exc:
        return f"{name} is not a timeline history file ({exc})"
    if wal.timeline > 1 and not entries:
        return f"{name} lists no parent timeline"
    previous_tli, previous_lsn = 0, -1
    for entry in entries:
        if entry.parent_timeline >= wal.timeline:
            return f"{name} names timeline {entry.parent_timeline} as a parent: it is the history of a later timeline"
        if entry.parent_timeline <= previous_tli or entry.switch_lsn.value < previous_lsn:
            return f"{name} lists its parent timelines out of order"
        previous_tli, previous_lsn = entry.parent_timeline, entry.switch_lsn.value
    return None


class ContentCheck:
    """Feed a WAL file's plaintext as it streams; `finish()` at the end. Raises IntegrityError
    naming the object when its content is not the file `name` (a segment's long page header, a
    history file's lines): before the file is handed to PostgreSQL, or while verify reads it."""

    def __init__(self, name: str, key: str, system_identifiers: Collection[int] = ()) -> None:
        self.name, self.key, self.sysids = name, key, system_identifiers
        self.kind = parse_wal_name(name).kind
        self.head = bytearray()
        self.checked = self.kind not in ("segment", "partial", "history")

    def feed(self, chunk: bytes) -> None:
        if self.checked:
            return
        if self.kind == "history":
            self.head += chunk
            return
        # only the long page header is read: a copy of the whole first chunk (up to a MiB) cost ~5 %
        # of a prefetching helper's CPU
        self.head += chunk[: LONG_HEADER_SIZE - len(self.head)]
        if len(self.head) >= LONG_HEADER_SIZE:
            self._judge(segment_mismatch(self.name, bytes(self.head), self.sysids))

    def finish(self) -> None:
        if self.checked:
            return
        if self.kind == "history":
            self._judge(history_mismatch(self.name, bytes(self.head)))
        else:
            self._judge(segment_mismatch(self.name, bytes(self.head), self.sysids))

    def _judge(self, problem: str | None) -> None:
        self.checked = True
        self.head = bytearray()
        if problem is not None:
            raise IntegrityError(
                f"object {self.key} is not the WAL file it is stored as: {problem}",
                hint="the archive was tampered with or mixed up (swapped, copied or foreign objects): "
                "run `opsdb verify` and restore from a repository you trust",
            )
