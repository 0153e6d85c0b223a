"""A running WAL helper, pushing ahead, follows config and key changes, on a real primary under archiving load.

`[wal] async = true`: the WAL helper stores WAL ahead of PostgreSQL's wal-push calls. While a
writer keeps switching WAL files, `[repository] url` is moved from repository A to B (the config
file replaced atomically), then the key file is rotated in place (same path, new key). Every
segment PostgreSQL archived after each change is in B, written with the new key: a wal-push never
reports a segment done that went to the old place or under the old key (at most the pushes already
in flight at the change also land in A, and are pushed again to B).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.pg.instance import Instance
from opsdb.repo import envelope, layout
from opsdb.repo import wal as repo_wal
from opsdb.storage.local import LocalStorage
from opsdb.stream.crypto import generate_key_file, load_key
from tests.integration.archiving_env import Writer, archiving_env, chown_tree, config_text
from tests.integration.test_pitr import v, wait_archived, x
from tests.polling import wait_until

pytestmark = pytest.mark.integration
WORKERS = 4


def _config(workdir: Path, port: int, repo: str) -> str:
    wal = f"async = true\npush_workers = {WORKERS}\n"
    return config_text(workdir, port, url=f"file://{workdir}/{repo}", wal=wal)


def _replace(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Swap a file's content atomically (as an editor or config management does)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    shutil.copystat(path, tmp)  # keep the mode; the new content is what must be noticed
    st = path.stat()
    os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def env(pg_bin_dir: Path) -> Iterator[dict[str, Any]]:
    render = lambda workdir, port: _config(workdir, port, "a")  # noqa: E731
    with archiving_env(pg_bin_dir, "opsdb-follow-", render) as e:
        for repo in ("a", "b"):
            (e["workdir"] / repo).mkdir(exist_ok=True)
        chown_tree(e["workdir"])
        yield e


def _archived(primary: Instance) -> str:
    return str(v(primary, "SELECT coalesce(last_archived_wal, '000000010000000000000000') FROM pg_stat_archiver"))


def segno(name: str) -> int:
    return int(name[8:16], 16) * 0x100 + int(name[16:24], 16)  # 16 MiB segments: 256 per log file


def _wait_archived_past(primary: Instance, name: str, count: int, timeout: float = 180) -> str:
    """Wait until PostgreSQL archived `count` more segments after `name` (bounded)."""
    past = lambda: segno(_archived(primary)) - segno(name) >= count  # noqa: E731
    wait_until(past, f"archiving {count} segments past {name}", timeout=timeout, interval=0.1)
    return _archived(primary)


def _wait_stored_after(storage: LocalStorage, when: float, count: int, timeout: float = 180) -> None:
    stored = lambda: sum(1 for at in _segments(storage).values() if at > when) >= count  # noqa: E731
    wait_until(stored, f"{count} segments stored after the change", timeout=timeout, interval=0.1)


def _segments(storage: LocalStorage) -> dict[str, float]:
    """Segment name -> when it was stored."""
    return {f.wal.name: f.info.mtime for f in repo_wal.list_archive(storage, "main") if f.wal.kind == "segment"}


def test_a_busy_pusher_follows_a_moved_repository_and_a_rotated_key(env: dict[str, Any]) -> None:
    primary, workdir, config = env["primary"], env["workdir"], env["config"]
    a, b = LocalStorage(str(workdir / "a")), LocalStorage(str(workdir / "b"))
    x(primary, "CREATE TABLE t (id int primary key, note text)")
    with Writer(primary) as writer:
        _wait_archived_past(primary, _archived(primary), 5)

        moved_at = _archived(primary)
        _replace(config, _config(workdir, primary.port, "b").encode(), 0o644)
        changed_at = time.time()
        changed_by = _archived(primary)  # a wal-push running during the replace may still finish into A
        _wait_archived_past(primary, changed_by, 5)

        old = load_key(key_file=workdir / "key")
        new_key = generate_key_file(workdir / "key-next")
        _replace(workdir / "key", (workdir / "key-next").read_bytes())
        rotated_at = time.time()
        rotated_by = _archived(primary)
        _wait_archived_past(primary, rotated_by, 3 * WORKERS)
        # the helper runs up to 2 x WORKERS ahead of the archiver: wait until enough were stored after it
        _wait_stored_after(b, rotated_at, 2 * WORKERS + 1)
    assert not writer.errors, writer.errors
    wait_archived(primary)
    last = _archived(primary)

    in_a, in_b = _segments(a), _segments(b)
    # PostgreSQL's archiver is serial: at most one archive_command, started before the replace and not yet
    # in last_archived_wal when changed_by was read, may still finish into A
    in_flight = _segment_range(changed_by, last)[:1]
    moved = _segment_range(changed_by, last)[1:]
    assert moved and all(n in in_b for n in moved), sorted(set(moved) - set(in_b))
    assert not [n for n in in_b if n <= moved_at]  # B got nothing before the move
    # the helper runs ahead of PostgreSQL's archiver: what it stored in A before the change is fine;
    # after the change, only the pushes already running may still complete into A
    leaked = [n for n, stored in in_a.items() if stored > changed_at]
    assert len(leaked) <= WORKERS, leaked
    assert all(
        n in in_b for n in in_a if n > changed_by and n not in in_flight
    )  # whatever A got past the archiver went to B too

    # stored after the rotation: only the pushes already running may still use the old key
    keys = {old.id: old, new_key.id: new_key}
    after = sorted(n for n, stored in _segments(b).items() if stored > rotated_at)
    used = {n: envelope.verify_object(b, layout.wal_object("main", n), keys).key_id for n in after}
    old_ones = [n for n, key_id in used.items() if key_id == old.id]
    assert len(used) > 2 * WORKERS and len(old_ones) <= WORKERS, old_ones
    assert set(_segment_range(rotated_by, last)) <= set(in_b)


def _segment_range(first: str, last: str) -> list[str]:
    """The segment names after `first` up to `last` (same timeline)."""
    tli = first[:8]
    return [f"{tli}{n // 0x100:08X}{n % 0x100:08X}" for n in range(segno(first) + 1, segno(last) + 1)]
