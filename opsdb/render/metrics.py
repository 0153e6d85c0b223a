"""Prometheus text exposition (format 0.0.4) for node_exporter's textfile collector. Pure.

Samples are grouped by metric name with one HELP and TYPE line each; label values are escaped;
no timestamps (the textfile collector ignores them). NaN/Inf are written as Prometheus spells them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    help: str = ""
    type: str = "gauge"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(samples: Iterable[Sample]) -> str:
    """The exposition text; families in first-seen order, duplicate (name, labels) keep the last value."""
    families: dict[str, tuple[str, str, dict[tuple[tuple[str, str], ...], float]]] = {}
    for s in samples:
        if not _NAME.match(s.name):
            raise ValueError(f"invalid metric name {s.name!r}")
        for label in s.labels:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} on {s.name}")
        help_text, kind, series = families.setdefault(s.name, (s.help, s.type, {}))
        series[tuple(sorted((k, str(v)) for k, v in s.labels.items()))] = float(s.value)
    lines: list[str] = []
    for name, (help_text, kind, series) in families.items():
        if help_text:
            lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in series.items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""
