"""A primary that archives through `opsdb wal-push`, for the tests of what happens around archiving.

- `config_text(workdir, port, ...)`: the opsdb.toml these tests share (file:// repository under workdir,
  encrypted with workdir/key, zstd level 1, `[wal] spool_dir` under workdir, cluster "main" on port).
- `archiving_primary(factory, opsdb, config, render)`: a started primary whose archive_command is
  `opsdb --config CONFIG wal-push %p`.
- `archiving_env(pg_bin_dir, prefix, render)`: a module's environment around one archiving primary
  (a dict: opsdb, config, workdir, primary, factory); everything stopped and removed at the end.
- `restore_started(env, *args)`: `opsdb restore --start` as root into a new directory on a free port.
- `Writer`: a thread that writes and switches WAL files until stopped (bounded).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opsdb.ops.wal.spool import stop_helpers
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from opsdb.stream.crypto import generate_key_file
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.integration.test_pitr import _opsdb_for_server, x
from tests.integration.test_retention_pitr import chown_tree, run


def config_text(
    workdir: Path,
    port: int,
    *,
    url: str | None = None,
    key: str = "key",
    encryption: str = "",
    wal: str = "",
    cluster: str = "",
    extra: str = "",
) -> str:
    """The tests' opsdb.toml; each keyword adds lines to its section (`extra`: whole sections after)."""
    return (
        f'[repository]\nurl = "{url or f"file://{workdir}/repo"}"\n'
        f'[encryption]\nkey_file = "{workdir}/{key}"\nrequired = true\n{encryption}'
        "[compression]\nlevel = 1\n"
        f'[wal]\nspool_dir = "{workdir}/spool"\n{wal}'
        f'[clusters.main]\nconninfo = "host=127.0.0.1 port={port} user=postgres dbname=postgres"\n{cluster}'
        f"{extra}"
    )


def archiving_primary(
    factory: ClusterFactory, opsdb: str, config: Path, render: Callable[[int], str], **settings: Any
) -> Instance:
    """archive_command = `opsdb --config CONFIG wal-push %p`. CONFIG is render(port): written with port 0
    before the server exists, again with its port; then its directory is handed to the server's user.
    `settings`: more server settings."""
    config.write_text(render(0))
    push = f"{opsdb} --config {config} wal-push %p"
    primary = factory(archive_mode="on", archive_command=push, lc_messages="C", **settings)
    config.write_text(render(primary.port))
    chown_tree(config.parent)
    return primary


@contextlib.contextmanager
def archiving_env(
    pg_bin_dir: Path, prefix: str, render: Callable[[Path, int], str], *, key: str = "key", **settings: Any
) -> Iterator[dict[str, Any]]:
    """One archiving primary with its config (render(workdir, port)), key file `key` and an empty
    file:// repository `repo` in a fresh work directory. At the end: the servers stopped, the WAL
    helpers they started stopped, the directory removed, even when the test failed."""
    opsdb = _opsdb_for_server()
    factory = ClusterFactory(pg_bin_dir)
    workdir = make_temp_dir(prefix)
    try:
        generate_key_file(workdir / key)
        (workdir / "repo").mkdir()
        config = workdir / "opsdb.toml"
        primary = archiving_primary(factory, opsdb, config, lambda port: render(workdir, port), **settings)
        yield {"opsdb": opsdb, "config": config, "workdir": workdir, "primary": primary, "factory": factory}
    finally:
        factory.close()
        stop_helpers(str(workdir / "spool"))
        shutil.rmtree(workdir, ignore_errors=True)


def restore_started(env: dict[str, Any], *args: str) -> tuple[dict[str, Any], Instance]:
    """`restore --start` into a new directory on a free port: its --json summary and the server (stopped
    by the factory at the end, even when the restore failed)."""
    factory = env["factory"]
    dest = factory.new_dir() / "data"
    port = free_port()
    instance = Instance(dest, port, factory.bin_dir, os_user(), LocalRunner())
    factory._made.append((instance, dest.parent))
    args = ("--json", "restore", "--target-dir", str(dest), "--start", "--port", str(port), *args)
    proc = run(env, *args, as_root=True)
    return json.loads(proc.stdout), instance


class Writer:
    """Writes and switches WAL files in a thread until stopped, at most `limit` times, so the archiver
    (and the WAL helper) always has work. Needs a table t (id int primary key, note text)."""

    def __init__(self, primary: Instance, *, limit: int = 2000, pause: float = 0.05) -> None:
        self.primary, self.limit, self.pause = primary, limit, pause
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[BaseException] = []
        self.switched = 0

    def _run(self) -> None:
        try:
            for i in range(self.limit):
                if self.stop.is_set():
                    return
                x(
                    self.primary,
                    f"INSERT INTO t SELECT g, repeat('w', 200) FROM generate_series({i * 100}, {i * 100 + 99}) g",
                )
                x(self.primary, "SELECT pg_switch_wal()")
                self.switched += 1
                self.stop.wait(self.pause)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
