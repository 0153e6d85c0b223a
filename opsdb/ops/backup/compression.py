"""Where a base backup is compressed: by the server (pg_basebackup --compress=server-zstd) or by opsdb.

`[compression] location = "server"` (the default) asks the server to compress zstd base backups, as
pgBackRest compresses on the database host: the walsender compresses as it reads, 20x less data moves
through the socket and the pipes, and opsdb stores the stream as it is (repo/envelope.put_object with
precompressed=True checks and counts it). Measured in bench/backup_cpu.py, this costs the machine
about a quarter less CPU per backup than opsdb compressing. A server built without zstd, or older
than PostgreSQL 15, refuses the option before it sends anything; the backup is then taken again with
opsdb compressing, and the catalog entry says which one did (`compressed_on`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from opsdb.errors import ToolError
from opsdb.model.catalog import StoredFile
from opsdb.repo.envelope import Codec

log = logging.getLogger("opsdb.backup")

SERVER_COMPRESSION_MIN_MAJOR = 15  # pg_basebackup --compress=server-zstd came with PostgreSQL 15


def server_compression_spec(wanted: bool, server_major: int, codec: Codec) -> str | None:
    """pg_basebackup's --compress value when the server is to compress this backup, else None."""
    if not wanted or codec.compression != "zstd" or server_major < SERVER_COMPRESSION_MIN_MAJOR:
        return None
    workers = f",workers={codec.threads}" if codec.threads > 0 else ""
    return f"server-zstd:level={codec.level}{workers}"


def unsupported_compression(error: ToolError) -> bool:
    """pg_basebackup failed because the server's build cannot compress with zstd."""
    tail = error.stderr_tail.lower()
    if "server does not support server-side compression" in tail:  # a server older than its pg_basebackup
        return True
    return "zstd" in tail and ("not supported" in tail or "does not support" in tail)


def stream_with_fallback(
    stream: Callable[..., tuple[list[StoredFile], dict[str, Any]]], spec: str | None
) -> tuple[list[StoredFile], dict[str, Any], str]:
    """stream(server_compression=spec) when the server can compress; a server built without zstd
    refuses before sending anything, and the backup is then taken again with opsdb compressing.
    Also returns where the backup was compressed ("server" or "client")."""
    if spec is not None:
        try:
            stored, manifest = stream(server_compression=spec)
            return stored, manifest, "server"
        except ToolError as exc:
            if not unsupported_compression(exc):
                raise
            log.warning(
                "the server cannot compress with zstd (%s); opsdb compresses instead"
                ' (set [compression] location = "client" to skip asking the server)',
                exc.stderr_tail.strip(),
            )
    stored, manifest = stream()
    return stored, manifest, "client"
