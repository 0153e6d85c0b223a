"""`opsdb reinit`: the deliberate step that moves a cluster to a new system identifier.

The cluster marker (repo/marker.py) pins one system identifier per cluster; wal-push, backup and dump
from any other server are refused. After `initdb` or `pg_upgrade` the server has a new identifier
and the operator says so, once, with this command: it reads the identifier from the running server,
shows the change, and (with confirm) rewrites the marker, keeping the old identity under `previous`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from opsdb.errors import UsageError
from opsdb.pg import conn as pg_conn
from opsdb.repo import marker
from opsdb.storage.base import Storage


@dataclasses.dataclass(frozen=True)
class ReinitResult:
    cluster: str
    before: str | None  # the marker's system identifier before (None: no marker yet)
    after: str
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def reinit(
    storage: Storage,
    cluster: str,
    conninfo: str,
    *,
    confirm: bool,
    connect: Callable[..., Any] = pg_conn.connect,
) -> ReinitResult:
    with connect(conninfo) as c:
        sysid = str(c.system_identifier())
    current = marker.read_cluster_marker(storage, cluster)
    before = current.system_identifier if current else None
    if before == sysid:
        return ReinitResult(cluster, before, sysid, False)
    if before is not None and not confirm:
        raise UsageError(
            f"unable to reinit cluster {cluster!r} without --yes: it moves the cluster from system identifier "
            f"{before} to {sysid} (the server's); from then on only that server may archive and back up here",
            hint="do this only after initdb or pg_upgrade of this cluster; rerun with --yes, "
            "and take a new backup right after",
        )
    _, after = marker.reinit_cluster(storage, cluster, sysid)
    return ReinitResult(cluster, before, after.system_identifier, True)
