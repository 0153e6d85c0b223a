"""What the kill -9 tests of the WAL helper share (test_wal_helper_kill_push.py, _prefetch.py): where
the WAL goes (file:// or moto S3, one `repository` fixture parameter each), and finding and killing
only this test's helpers (by their command line: `wal-helper` and this test's config).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from opsdb.storage import open_storage
from opsdb.storage.base import Storage
from tests.integration.archiving_env import config_text


@dataclasses.dataclass(frozen=True)
class Repository:
    """Where the WAL goes: a file:// directory in the work directory, or a fresh prefix on moto."""

    kind: str
    endpoint: str | None = None
    bucket: str | None = None

    def url(self, workdir: Path) -> str:
        return f"file://{workdir}/repo" if self.kind == "file" else f"s3://{self.bucket}/{workdir.name}"

    def config(self, workdir: Path, port: int, wal: str, cluster: str = "") -> str:
        endpoint = f'endpoint_url = "{self.endpoint}"\nregion = "us-east-1"\n' if self.endpoint else ""
        text = config_text(workdir, port, url=self.url(workdir), wal=wal, cluster=cluster)
        return text.replace("[encryption]", endpoint + "[encryption]", 1)

    def storage(self, workdir: Path) -> Storage:
        return open_storage(self.url(workdir), endpoint_url=self.endpoint)


def repository_for(request: pytest.FixtureRequest) -> Repository:
    """The `repository` fixture of both modules (params file, s3). For S3 the moto fixture comes first,
    so the servers started after it have its credentials in their environment."""
    if request.param == "file":
        return Repository("file")
    endpoint = request.getfixturevalue("moto_endpoint")
    return Repository("s3", endpoint, request.getfixturevalue("s3_bucket"))


def helper_argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def is_helper(pid: int, config: Path) -> bool:
    """Whether pid is a WAL helper serving this test's config (never another test's process)."""
    argv = helper_argv(pid)
    return b"wal-helper" in argv and os.fsencode(config) in argv


def kill_helper(pid: int, config: Path) -> bool:
    if not is_helper(pid, config):  # it ended meanwhile (and its pid is not reused by one of ours)
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True
