"""Plain-text layout the human renderers share: aligned tables (pure: rows -> lines)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Collection[int] = ()) -> list[str]:
    """The header line, then one line per row: columns two spaces apart, each as wide as its widest
    cell, left-aligned except the column numbers in `right`; None shows as "-"; no trailing spaces."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in cells]
