"""pg_basebackup's tar streams into repository objects through named pipes (ops/backup/physical.py
runs it and commits what it returns).

How the bytes flow (nothing but backup_manifest is staged on disk):
  pg_basebackup -Ft -X fetch -D <tmp>/out writes base.tar and one <oid>.tar per tablespace. Before it
  opens them, <tmp>/out is filled with named pipes of those names (pg_basebackup insists on creating
  or finding an empty directory, so the pipes are made the moment it has created the directory,
  which is before it even asks the server for the backup). One reader thread per pipe streams it
  through put_object (compress, encrypt, SHA-256 of the compressed bytes: envelope version 2) into
  backups/<id>/. backup_manifest is small and lands as a regular file; it is stored after
  pg_basebackup exits. Any tar that still arrived as a regular file (a tablespace created during
  the backup) is uploaded from disk as a fallback.

This module also owns the work directories (<tmp>/opsdb-backup-<pid>-*) and cleans up those of killed runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opsdb.errors import IntegrityError, OperationFailed, OpsdbError, ToolError
from opsdb.model.catalog import BASE_OBJECT, MANIFEST_OBJECT, StoredFile
from opsdb.ops.backup.source import ServerFacts
from opsdb.ops.common.phases import phase
from opsdb.pg.tools import PgTools
from opsdb.proc import Cmd, Runner, pid_alive
from opsdb.repo import envelope, layout
from opsdb.repo.envelope import Codec, StoredObject
from opsdb.storage.base import Storage
from opsdb.stream.stages import CHUNK_SIZE

log = logging.getLogger("opsdb.backup")

PIPE_BUFFER = 1024 * 1024  # F_SETPIPE_SZ: fewer wake-ups between pg_basebackup and the reader
# Reads from the pipe: 256 KiB costs no speed against 1 MiB and ~1.8 MB less peak RSS (the read buffers
# and what compression and encryption hold per piece; measured on a scale-100 pg_basebackup stream).
PIPE_READ = 256 * 1024
F_SETPIPE_SZ = 1031
DIR_WAIT_SECONDS = 600.0  # how long pg_basebackup may take to connect and create its directory
WORK_PREFIX = "opsdb-backup-"  # + <opsdb pid>-<random>: lets a later run recognise a killed run's directory
OnBytes = Callable[[int], None]


class _PipeReader(threading.Thread):
    """Streams one named pipe into one repository object."""

    def __init__(
        self, path: Path, key: str, storage: Storage, codec: Codec, on_bytes: OnBytes | None, precompressed: bool
    ) -> None:
        super().__init__(name=f"opsdb-pipe-{path.name}", daemon=True)
        self.path, self.key, self.storage, self.codec, self.on_bytes = path, key, storage, codec, on_bytes
        self.precompressed = precompressed
        self.result: StoredObject | None = None
        self.error: BaseException | None = None
        self.got_bytes = False
        # a handle on the pipe itself: pg_basebackup removes its directory (and our pipe's name) when it
        # fails, and a reader still waiting in open() can then be released only through this handle
        self._handle = os.open(path, os.O_PATH)

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)  # blocks until pg_basebackup opens it (or we unblock it)
        except OSError as exc:
            self.error = exc
            return
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BUFFER)
        try:
            with os.fdopen(fd, "rb", buffering=0) as pipe:
                first = pipe.read(PIPE_READ)
                if not first:
                    return  # never written: pg_basebackup failed, or this tablespace is gone
                self.got_bytes = True
                self.result = envelope.put_object(
                    self.storage,
                    self.key,
                    _chain(first, pipe),
                    self.codec,
                    if_absent=True,
                    on_bytes=self.on_bytes,
                    plaintext_digest=False,
                    precompressed=self.precompressed,
                )
        except BaseException as exc:  # closing the pipe makes pg_basebackup fail (EPIPE) instead of hang
            self.error = exc

    def unblock(self) -> None:
        """Release a reader still waiting in open(): open the write end once and close it (EOF)."""
        with contextlib.suppress(OSError):
            os.close(os.open(f"/proc/self/fd/{self._handle}", os.O_WRONLY | os.O_NONBLOCK))

    def close_handle(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._handle)


def _chain(first: bytes, pipe: Any) -> Iterator[bytes]:
    yield first
    while True:
        chunk = pipe.read(PIPE_READ)
        if not chunk:
            return
        yield chunk


def _tar_names(facts: ServerFacts, suffix: str = "") -> dict[str, str]:
    """pg_basebackup's file name (suffix ".zst" when the server compresses) -> our object name."""
    names = {f"base.tar{suffix}": BASE_OBJECT}
    for space in facts.tablespaces:
        names[f"{space.oid}.tar{suffix}"] = space.object_name
    return names


def stream_basebackup(
    bin_dir: Path,
    conninfo: str,
    facts: ServerFacts,
    cluster: str,
    backup_id: str,
    storage: Storage,
    codec: Codec,
    runner: Runner,
    on_bytes: OnBytes | None,
    tmp_root: str | None,
    *,
    fast_checkpoint: bool,
    manifest_checksums: str,
    extra: tuple[str, ...] = (),
    server_compression: str | None = None,
) -> tuple[list[StoredFile], dict[str, Any]]:
    """Run pg_basebackup against `conninfo` (the server chosen to back up; `facts` from its slot session)
    and store its tars and backup_manifest as backups/<id>/ objects; returns them and the parsed manifest."""
    clean_stale_work_dirs(tmp_root)
    if server_compression is not None:
        extra = (*extra, f"--compress={server_compression}")
    suffix = ".zst" if server_compression is not None else ""
    names = _tar_names(facts, suffix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=tmp_root))
    out = tmp / "out"
    cmd = PgTools(bin_dir).pg_basebackup(
        conninfo,
        pgdata=str(out),
        wal="fetch",
        fast_checkpoint=fast_checkpoint,
        manifest_checksums=manifest_checksums,
        label=f"opsdb {backup_id}",
        extra=("--no-sync", *extra),  # nothing to sync: the pipes are read into the repository
    )
    cmd = Cmd(cmd.argv, env=cmd.env, cwd=str(tmp))  # as ourselves: we must be able to make the pipes
    readers: list[_PipeReader] = []
    log_path = tmp / "pg_basebackup.log"
    try:
        proc = runner.spawn(cmd, log_path=log_path)
        (tmp / "pg_basebackup.pid").write_text(str(proc.pid))
        compressed_by = "server" if suffix else "client"
        phase("backup", "streaming", backup_id=backup_id, objects=",".join(names.values()), compressed_on=compressed_by)
        try:
            readers = _make_pipes(out, proc, names, storage, cluster, backup_id, codec, on_bytes, bool(suffix))
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            raise
        finally:
            for reader in readers:  # pg_basebackup is gone: release readers still waiting in open()
                while reader.is_alive():
                    reader.unblock()
                    reader.join(0.1)
                reader.close_handle()
        tail = log_path.read_text(errors="replace") if log_path.exists() else ""
        # a reader that never got a byte failed because pg_basebackup did (it removes its directory,
        # pipes included, when it fails): then pg_basebackup's own message is the one to report
        failed = next((r.error for r in readers if r.error is not None and (r.got_bytes or rc == 0)), None)
        if failed is not None:
            if isinstance(failed, OpsdbError):
                raise failed
            raise OperationFailed(f"unable to store backup {backup_id}: {failed}") from failed
        if rc != 0:
            raise ToolError("pg_basebackup", rc, tail, doing=f"taking backup {backup_id}")
        stored = [_stored_file(r.result, r.key) for r in readers if r.result is not None]
        phase("backup", "uploading", backup_id=backup_id, streamed_bytes=sum(s.size for s in stored))
        stored += _upload_regular_tars(out, storage, cluster, backup_id, codec, on_bytes, names, suffix)
        if not any(s.name == BASE_OBJECT for s in stored):
            raise OperationFailed(f"unable to take backup {backup_id}: pg_basebackup produced no base.tar")
        manifest_path = out / "backup_manifest"
        if not manifest_path.is_file():
            raise OperationFailed(f"unable to take backup {backup_id}: pg_basebackup wrote no backup_manifest")
        raw = manifest_path.read_bytes()
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise IntegrityError(f"backup_manifest of backup {backup_id} is not JSON: {exc}") from None
        key = layout.backup_object(cluster, backup_id, MANIFEST_OBJECT)
        obj = envelope.put_object(storage, key, [raw], codec, if_absent=True, plaintext_digest=False)
        stored.append(_stored_file(obj, key, role="manifest"))
        return stored, manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_stale_work_dirs(tmp_root: str | None) -> list[str]:
    """Remove work directories of backup runs that were killed (their opsdb process is gone), and stop
    their pg_basebackup if it still waits on a pipe nobody reads."""
    removed = []
    root = Path(tmp_root or tempfile.gettempdir())
    for path in root.glob(f"{WORK_PREFIX}*-*"):
        owner = path.name[len(WORK_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or pid_alive(int(owner)):
            continue
        with contextlib.suppress(OSError, ValueError):
            child = int((path / "pg_basebackup.pid").read_text())
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if str(path).encode() in cmdline:
                os.kill(child, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def _make_pipes(
    out: Path,
    proc: Any,
    names: dict[str, str],
    storage: Storage,
    cluster: str,
    backup_id: str,
    codec: Codec,
    on_bytes: OnBytes | None,
    precompressed: bool,
) -> list[_PipeReader]:
    """Wait for pg_basebackup to create `out`, then put a named pipe (and a reader) at each tar name."""
    deadline = time.monotonic() + DIR_WAIT_SECONDS
    while not out.is_dir():
        if proc.poll() is not None:
            return []  # it failed before creating the directory; its exit status says why
        if time.monotonic() > deadline:
            raise OperationFailed(f"pg_basebackup did not create {out} within {DIR_WAIT_SECONDS:g} s")
        time.sleep(0.0005)
    readers = []
    for file_name, object_name in names.items():
        path = out / file_name
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            # lost the race: pg_basebackup already writes a regular file; it is uploaded afterwards
            log.warning("%s was created before its pipe; it is staged on disk and uploaded at the end", file_name)
            continue
        except FileNotFoundError:
            break  # pg_basebackup failed and removed its directory; its exit status says why
        key = layout.backup_object(cluster, backup_id, object_name)
        try:
            reader = _PipeReader(path, key, storage, codec, on_bytes, precompressed)
        except FileNotFoundError:
            break  # the same, between making the pipe and opening it
        reader.start()
        readers.append(reader)
    return readers


def _upload_regular_tars(
    out: Path,
    storage: Storage,
    cluster: str,
    backup_id: str,
    codec: Codec,
    on_bytes: OnBytes | None,
    names: dict[str, str],
    suffix: str = "",
) -> list[StoredFile]:
    stored = []
    for path in sorted(out.glob(f"*.tar{suffix}")):
        if not path.is_file():
            continue  # one of our pipes
        stem = path.name.split(".", 1)[0]
        object_name = names.get(path.name) or (f"pg_tblspc-{stem}.tar" if stem.isdigit() else path.name)
        key = layout.backup_object(cluster, backup_id, object_name)
        with open(path, "rb") as fh:
            chunks = iter(lambda: fh.read(CHUNK_SIZE), b"")
            obj = envelope.put_object(
                storage,
                key,
                chunks,
                codec,
                if_absent=True,
                on_bytes=on_bytes,
                plaintext_digest=False,
                precompressed=bool(suffix),
            )
        stored.append(_stored_file(obj, key))
    return stored


def _stored_file(obj: StoredObject | None, key: str, role: str | None = None) -> StoredFile:
    assert obj is not None
    name = key.rsplit("/", 1)[-1]
    if role is None:
        role = "base" if name == BASE_OBJECT else "tablespace"
    return StoredFile(name, obj.size, obj.stored_size, obj.sha256, role, obj.digest_of)
