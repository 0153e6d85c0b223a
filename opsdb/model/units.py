"""Durations and sizes as operators write them ("14d", "1h", "64MiB")."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> timedelta:
    """'90s', '15m', '1h', '14d', '2w', or a bare number of seconds."""
    if isinstance(text, int | float):
        return timedelta(seconds=float(text))
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h, d or w (e.g. '14d')")
    value, unit = match.groups()
    return timedelta(seconds=float(value) * _SECONDS[unit or "s"])


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_BYTES = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str | int) -> int:
    """'16MB', '64MiB', '1g', or a bare number of bytes (binary multiples)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number with k, M, G or T (e.g. '16MB')")
    value, unit = match.groups()
    return int(float(value) * _BYTES[(unit or "").lower()[:1]])


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
