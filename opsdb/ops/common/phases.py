"""Phase log lines of operations: what an operation is doing now, with its fields.

Operations never print. They log each phase at info level through the `logging` module, as
`extra={"fields": {...}}` (cli/logs.py writes the record as `opsdb: backup: phase streaming
backup_id=... ` or as one JSON object a line, on stderr and in `[log] file`; a scheduled job's own
process does the same). Between the command's start and end lines (cli/app.py) they tell an operator,
or a log search, how far a run got and where its time went. Nothing secret goes into fields.
"""

from __future__ import annotations

import logging
from typing import Any


def phase(operation: str, name: str, **fields: Any) -> None:
    """One phase line of `operation` (backup, restore, verify, retention, drill, dump): `name` says
    what starts now; fields are what it works on (ids, counts, bytes, LSNs)."""
    logging.getLogger(f"opsdb.{operation}").info(
        "%s: phase %s",
        operation,
        name,
        extra={"fields": {"event": "phase", "command": operation, "phase": name, **fields}},
    )
