"""ops.backup.pipes: the pipe machinery without PostgreSQL: a scripted stand-in for pg_basebackup writes into
the named pipes (or, having lost the race, into regular files), and the objects must arrive intact."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from opsdb.errors import ToolError
from opsdb.model.catalog import Tablespace
from opsdb.ops.backup.physical import wal_range
from opsdb.ops.backup.pipes import stream_basebackup
from opsdb.ops.backup.source import ServerFacts
from opsdb.proc import Cmd
from opsdb.repo import envelope, layout
from opsdb.repo.envelope import Codec
from opsdb.storage.memory import MemoryStorage

MANIFEST = {"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/4000028", "End-LSN": "0/4000100"}], "Files": []}
FACTS = ServerFacts("host=x", "15.18", 150018, "7", False, (Tablespace(16385, "extra", "/srv/extra"),))


class ScriptedBasebackup:
    """spawn() returns at once; a thread plays pg_basebackup: make -D, write the tars, the manifest."""

    def __init__(self, tars: dict[str, bytes], *, regular: bool = False, rc: int = 0, delay: float = 0.05) -> None:
        self.tars, self.regular, self.rc, self.delay = tars, regular, rc, delay
        self.pid = os.getpid()
        self._done = threading.Event()

    def spawn(self, cmd: Cmd, *, log_path: Path | None = None) -> ScriptedBasebackup:
        out = Path(cmd.argv[cmd.argv.index("-D") + 1])
        threading.Thread(target=self._play, args=(out, log_path), daemon=True).start()
        return self

    def _play(self, out: Path, log_path: Path | None) -> None:
        if self.regular:  # lose the race for sure: the directory appears with the tars already in it
            staging = out.with_name("staging")
            staging.mkdir(mode=0o700)
            for name in self.tars:
                (staging / name).touch()
            staging.rename(out)
        else:
            out.mkdir(mode=0o700)
            time.sleep(self.delay)  # the real one connects and checkpoints first
        for name, data in self.tars.items():
            with open(out / name, "wb") as fh:  # a pipe when opsdb made one in time, else a regular file
                fh.write(data)
        (out / "backup_manifest").write_text(json.dumps(MANIFEST))
        if log_path is not None and self.rc:
            log_path.write_text("pg_basebackup: error: scripted failure\n")
        self._done.set()

    def poll(self) -> int | None:
        return self.rc if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        self._done.wait(timeout if timeout is not None else 30)
        return self.rc

    def terminate(self, timeout: float = 10) -> int:
        return self.rc


def run(runner: Any, storage: MemoryStorage, tmp_path: Path) -> Any:
    return stream_basebackup(
        Path("/usr/lib/postgresql/15/bin"),
        "host=x",
        FACTS,
        "main",
        "20261121T101500Z-F",
        storage,
        Codec("zstd", 1),
        runner,
        None,
        str(tmp_path),
        fast_checkpoint=True,
        manifest_checksums="CRC32C",
    )


def test_tars_stream_through_the_pipes_into_objects(tmp_path: Path) -> None:
    base, space = os.urandom(3 * 1024 * 1024), b"tablespace" * 1000
    storage = MemoryStorage()
    stored, manifest = run(ScriptedBasebackup({"16385.tar": space, "base.tar": base}), storage, tmp_path)
    by_name = {s.name: s for s in stored}
    assert set(by_name) == {"base.tar", "pg_tblspc-16385.tar", "backup_manifest"}
    assert by_name["base.tar"].role == "base" and by_name["base.tar"].size == len(base)
    base_key = layout.backup_object("main", "20261121T101500Z-F", "base.tar")
    # backup objects carry the digest of their compressed bytes (envelope version 2), and reading
    # one back yields the plaintext and that same digest
    readback = envelope.Readback()
    assert b"".join(envelope.get_object(storage, base_key, {}, readback=readback)) == base
    assert by_name["base.tar"].sha256_of == "compressed" == readback.digest_of
    assert readback.sha256 == by_name["base.tar"].sha256 != hashlib.sha256(base).hexdigest()
    key = layout.backup_object("main", "20261121T101500Z-F", "pg_tblspc-16385.tar")
    assert b"".join(envelope.get_object(storage, key, {})) == space
    assert wal_range(manifest)[0] == 1
    assert list(tmp_path.iterdir()) == []  # the work directory is gone


def test_a_tar_written_before_its_pipe_is_uploaded_from_disk(tmp_path: Path) -> None:
    base = b"b" * (2 * 1024 * 1024)
    storage = MemoryStorage()
    stored, _ = run(ScriptedBasebackup({"base.tar": base}, regular=True), storage, tmp_path)
    names = {s.name for s in stored}
    assert "base.tar" in names and "pg_tblspc-16385.tar" not in names  # never written: no empty object
    key = layout.backup_object("main", "20261121T101500Z-F", "base.tar")
    assert b"".join(envelope.get_object(storage, key, {})) == base


def test_a_failing_pg_basebackup_raises_its_error_and_releases_the_readers(tmp_path: Path) -> None:
    storage = MemoryStorage()
    with pytest.raises(ToolError, match="scripted failure"):
        run(ScriptedBasebackup({}, rc=1), storage, tmp_path)
    assert list(storage.list("")) == []
    assert threading.active_count() < 10  # no reader left blocked in open()
