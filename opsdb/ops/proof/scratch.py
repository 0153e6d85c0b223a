"""Scratch instances for drills: where a restored data directory is started, checked and thrown away.

Two providers:
- `local` (default): a temporary directory, a free port on 127.0.0.1, the server run as `os_user`
  when opsdb runs as root; recovery fetches WAL through `opsdb wal-fetch` like a real restore.
- `docker`: the official `postgres:<major>` image (testcontainers) with the restored directory
  mounted; the image has no opsdb, so the WAL the drill needs is staged beside the data directory
  and restore_command copies from there.

Either way a scratch server never archives (archive_mode=off): a promoted drill would otherwise push
a new timeline's history and segments into the production repository, and a later real recovery
with recovery_target_timeline=latest could follow the drill's timeline.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from opsdb.errors import OperationFailed, UsageError
from opsdb.pg.conninfo import make_conninfo
from opsdb.pg.instance import Instance
from opsdb.proc import Runner

# Settings every scratch server gets on top of the restored configuration.
SCRATCH_SETTINGS: dict[str, object] = {
    "archive_mode": "off",  # never archive into the production repository
    "archive_command": "",
    "primary_conninfo": "",
    "primary_slot_name": "",
    "synchronous_standby_names": "",
    "hot_standby": "on",
    "lc_messages": "C",  # log lines are parsed (recovery stop reason): keep them in English
    "log_destination": "stderr",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_recovery_conflict_waits": "off",
    "recovery_target_action": "promote",
}
# Not touched on purpose: max_connections, max_wal_senders, max_worker_processes, max_prepared_transactions
# and max_locks_per_transaction must stay >= the primary's, or recovery aborts ("insufficient parameter settings").


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chown_to(path: Path, user: str | None) -> None:
    if user is None or os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"os_user {user!r} does not exist on this machine") from None
    os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclasses.dataclass
class ScratchSpace:
    """Where one drill restores: workdir/data (PGDATA), workdir/wal (staged WAL, docker), a port."""

    workdir: Path
    port: int
    provider: str

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def wal_dir(self) -> Path:
        return self.workdir / "wal"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgresql.log"


class ScratchProvider(Protocol):
    name: str
    needs_staged_wal: bool

    def prepare(self) -> ScratchSpace: ...

    def restore_command(self, space: ScratchSpace, default: str) -> str: ...

    def start(self, space: ScratchSpace, timeout: float) -> None: ...

    def conninfo(self, space: ScratchSpace, dbname: str = "postgres") -> str: ...

    def is_running(self, space: ScratchSpace) -> bool: ...

    def log_tail(self, space: ScratchSpace, max_bytes: int = 4096) -> str: ...

    def teardown(self, space: ScratchSpace, *, keep: bool) -> None: ...


class LocalScratch:
    """A temporary directory and a free port on this machine."""

    name = "local"
    needs_staged_wal = False

    def __init__(self, bin_dir: Path, os_user: str | None, runner: Runner, base_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.os_user = os_user if os.geteuid() == 0 else None
        self.runner = runner
        self.base_dir = base_dir

    def _instance(self, space: ScratchSpace) -> Instance:
        return Instance(space.data_dir, space.port, self.bin_dir, self.os_user, self.runner, log_path=space.log_path)

    def prepare(self) -> ScratchSpace:
        if self.base_dir is not None:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="opsdb-drill-", dir=self.base_dir))
        chown_to(workdir, self.os_user)
        return ScratchSpace(workdir, free_port(), self.name)

    def restore_command(self, space: ScratchSpace, default: str) -> str:
        return default

    def start(self, space: ScratchSpace, timeout: float) -> None:
        # pg_ctl -w returns once connections are accepted: with hot_standby that is at consistency,
        # before the target is reached; the caller waits for promotion.
        self._instance(space).start(timeout=timeout)

    def conninfo(self, space: ScratchSpace, dbname: str = "postgres") -> str:
        return self._instance(space).conninfo(dbname)

    def is_running(self, space: ScratchSpace) -> bool:
        return self._instance(space).is_running()

    def log_tail(self, space: ScratchSpace, max_bytes: int = 4096) -> str:
        return self._instance(space).log_tail(max_bytes)

    def teardown(self, space: ScratchSpace, *, keep: bool) -> None:
        if keep:
            return
        try:
            self._instance(space).stop(mode="immediate", timeout=60)
        finally:
            shutil.rmtree(space.workdir, ignore_errors=True)


class DockerScratch:
    """The official postgres image of the backup's major version, data directory bind-mounted."""

    name = "docker"
    needs_staged_wal = True
    CONTAINER_DATA = "/var/lib/postgresql/data"
    CONTAINER_WAL = "/opsdb-wal"
    IMAGE_UID = 999  # the postgres user of the official Debian-based images

    def __init__(self, image: str, base_dir: Path | None = None) -> None:
        try:
            from testcontainers.core.container import DockerContainer  # noqa: F401
        except ImportError:
            raise UsageError(
                "the docker drill provider needs the testcontainers package",
                hint="pip install 'opsdb[docker]', or use --provider local",
            ) from None
        self.image = image
        self.base_dir = base_dir
        self._containers: dict[Path, Any] = {}

    def prepare(self) -> ScratchSpace:
        workdir = Path(tempfile.mkdtemp(prefix="opsdb-drill-", dir=self.base_dir))
        (workdir / "wal").mkdir()
        return ScratchSpace(workdir, 0, self.name)

    def restore_command(self, space: ScratchSpace, default: str) -> str:
        return f"cp {self.CONTAINER_WAL}/%f %p"

    def start(self, space: ScratchSpace, timeout: float) -> None:
        from testcontainers.core.container import DockerContainer

        if os.geteuid() == 0:
            for root, dirs, files in os.walk(space.workdir):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), self.IMAGE_UID, self.IMAGE_UID)
            os.chown(space.workdir, self.IMAGE_UID, self.IMAGE_UID)
        container = (
            DockerContainer(self.image)
            .with_volume_mapping(str(space.data_dir), self.CONTAINER_DATA, "rw")
            .with_volume_mapping(str(space.wal_dir), self.CONTAINER_WAL, "ro")
            .with_exposed_ports(5432)
            .with_env("PGDATA", self.CONTAINER_DATA)
            .with_command("postgres -c listen_addresses=* -c port=5432")
        )
        container.start()
        self._containers[space.workdir] = container
        space.port = int(container.get_exposed_port(5432))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded: until the server answers or the timeout
            try:
                with socket.create_connection(("127.0.0.1", space.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise OperationFailed(f"scratch container {self.image} did not accept connections within {timeout:g} s")

    def conninfo(self, space: ScratchSpace, dbname: str = "postgres") -> str:
        return make_conninfo({"host": "127.0.0.1", "port": str(space.port), "user": "postgres", "dbname": dbname})

    def is_running(self, space: ScratchSpace) -> bool:
        container = self._containers.get(space.workdir)
        if container is None:
            return False
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        return bool(wrapped.status == "running")

    def log_tail(self, space: ScratchSpace, max_bytes: int = 4096) -> str:
        container = self._containers.get(space.workdir)
        if container is None:
            return ""
        out, err = container.get_logs()
        logs: bytes = out + err
        return logs.decode("utf-8", "replace")[-max_bytes:]

    def teardown(self, space: ScratchSpace, *, keep: bool) -> None:
        if keep:
            return
        container = self._containers.pop(space.workdir, None)
        try:
            if container is not None:
                container.stop()
        finally:
            shutil.rmtree(space.workdir, ignore_errors=True)
