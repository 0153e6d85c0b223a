"""A primary that archives through `opsdb wal-push`, for the tests of what happens around archiving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opsdb.pg.instance import Instance
from tests.fixtures.pg import ClusterFactory
from tests.integration.test_retention_pitr import chown_tree


def archiving_primary(factory: ClusterFactory, opsdb: str, config: Path, render: Callable[[int], str]) -> Instance:
    """archive_command = `opsdb --config CONFIG wal-push %p`. CONFIG is render(port): written with port 0
    before the server exists, again with its port; then its directory is handed to the server's user."""
    config.write_text(render(0))
    primary = factory(archive_mode="on", archive_command=f"{opsdb} --config {config} wal-push %p", lc_messages="C")
    config.write_text(render(primary.port))
    chown_tree(config.parent)
    return primary
