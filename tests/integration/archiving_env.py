"""A primary that archives through `opsdb wal-push`, for the tests of what happens around archiving.

- `config_text(workdir, port, ...)`: the opsdb.toml these tests share (file:// repository under workdir,
  encrypted with workdir/key, zstd level 1, `[wal] spool_dir` under workdir, cluster "main" on port).
- `archiving_primary(factory, opsdb, config, render)`: a started primary whose archive_command is
  `opsdb --config CONFIG wal-push %p`.
- `archiving_env(pg_bin_dir, prefix, render)`: a module's environment around one archiving primary
  (a dict: opsdb, config, workdir, primary, factory); everything stopped and removed at the end.
- `restore_started(env, *args)`: `opsdb restore --start` as root into a new directory on a free port.
- `Writer`: a thread that writes and switches WAL files until stopped (bounded).
- `run(env, *args)`: the CLI as the server's OS user (or as root); `backup`, `now_between`, `rows`: the
  steps of a PITR story (a backup, a target time between two commits, the rows of table t).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opsdb.model.target import format_time
from opsdb.ops.wal.spool import stop_helpers
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from opsdb.stream.crypto import generate_key_file
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.integration.test_pitr import _opsdb_for_server, v, x

OPSDB_HERE = str(Path(sys.executable).with_name("opsdb"))  # this checkout's, for commands run as root


def chown_tree(root: Path) -> None:
    user = os_user()
    if user:
        entry = pwd.getpwnam(user)
        for p in [root, *root.rglob("*")]:
            try:
                os.chown(p, entry.pw_uid, entry.pw_gid)
            except FileNotFoundError:  # gone meanwhile (a WAL helper's socket when it restarts): nothing to chown
                pass


def run(env: dict[str, Any], *args: str, config: Path | None = None, check: bool = True, as_root: bool = False):
    """The CLI as the server's OS user; restore as root with this checkout's opsdb (it hands the files to
    os_user; the restore_command it writes runs the server user's opsdb, $OPSDB_EXECUTABLE)."""
    user = None if as_root else os_user()
    argv = [env["opsdb"] if user else OPSDB_HERE, "--config", str(config or env["config"]), *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    environ = dict(os.environ, OPSDB_EXECUTABLE=env["opsdb"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=environ, cwd="/tmp")
    if check and proc.returncode != 0:
        raise AssertionError(f"opsdb {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def backup(env: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(run(env, "--json", "backup").stdout)
    time.sleep(1.1)  # ids have second precision; keep the three apart without relying on the collision rule
    return doc


def now_between(primary: Instance) -> str:
    """A time strictly between two commits: the caller commits before and after."""
    time.sleep(0.3)
    before = v(primary, "SELECT clock_timestamp()")
    time.sleep(1.0)
    after = v(primary, "SELECT clock_timestamp()")
    time.sleep(0.3)
    return format_time(before + (after - before) / 2)


def rows(port: int) -> list[int]:
    with connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", timeout=10) as c:
        return [r["id"] for r in c.fetchall("SELECT id FROM t ORDER BY id")]


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
