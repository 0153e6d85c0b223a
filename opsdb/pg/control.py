"""pg_control, the file PostgreSQL keeps its cluster's identity in: read without a connection.

`global/pg_control` starts with ControlFileData.system_identifier, 8 bytes in the machine's byte
order (little-endian on every platform opsdb runs on). The WAL path reads it to check that a fetched
segment belongs to the server being recovered; nothing else of the file is needed.
"""

from __future__ import annotations

import os

SYSTEM_IDENTIFIER_SIZE = 8


def parse_system_identifier(raw: bytes) -> int | None:
    """The system identifier at the start of pg_control's bytes; None when too short."""
    if len(raw) < SYSTEM_IDENTIFIER_SIZE:
        return None
    return int.from_bytes(raw[:SYSTEM_IDENTIFIER_SIZE], "little")


def system_identifier(data_dir: str) -> int | None:
    """The system identifier of the data directory's cluster; None when pg_control cannot be read."""
    try:
        with open(os.path.join(data_dir, "global", "pg_control"), "rb") as fh:
            return parse_system_identifier(fh.read(SYSTEM_IDENTIFIER_SIZE))
    except OSError:
        return None
