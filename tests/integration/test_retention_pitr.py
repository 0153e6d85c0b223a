"""Retention on a real cluster: three `opsdb backup`s with WAL archived by `archive_command = opsdb wal-push`
in between, keep_last = 2 applied with an injected clock (so min_age does not hold the backups back),
then a point-in-time restore after the oldest retained backup must give exactly its rows.

Also: `opsdb retention apply --dry-run` through the CLI changes nothing (full listing: names, sizes,
mtimes, contents), and a second run after a PITR (which archived timeline 2) keeps the .history file
while it expires WAL on both timelines.

The CLI runs as the server's OS user (which owns the repository, as in a real deployment); the applies
with an injected clock run in this process (as root), after which the repository is handed back.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsdb.config import load_settings
from opsdb.model.lsn import DEFAULT_SEGMENT_SIZE, Lsn
from opsdb.ops.retention import apply as retention
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from opsdb.repo import catalog
from opsdb.repo import wal as repo_wal
from opsdb.storage.local import LocalStorage
from opsdb.stream.crypto import load_key
from tests.fixtures.pg import free_port, os_user
from tests.integration.archiving_env import archiving_env, backup, chown_tree, config_text, now_between, rows, run
from tests.integration.test_pitr import wait_archived, x
from tests.polling import wait_until

pytestmark = pytest.mark.integration
SEG = DEFAULT_SEGMENT_SIZE


def listing(repo: Path) -> dict[str, Any]:
    """Every directory (with its mtime: an object put and deleted again changes it) and file (size, mtime,
    content digest) of the repository."""
    out: dict[str, Any] = {}
    for p in sorted(repo.rglob("*")):
        rel = str(p.relative_to(repo))
        if p.is_dir():
            out[rel] = ("dir", p.stat().st_mtime_ns)
        else:
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def archive(env: dict[str, Any]) -> list[repo_wal.ArchivedFile]:
    return repo_wal.list_archive(env["storage"], "main")


def segments(env: dict[str, Any], timeline: int) -> list[int]:
    return sorted(
        f.wal.segno for f in archive(env) if f.wal.kind == "segment" and f.wal.timeline == timeline and f.wal.segno
    )


def start_segment(backup: dict[str, Any]) -> int:
    return Lsn.parse(backup["start_lsn"]).segment_number(SEG)


def apply_now(env: dict[str, Any]) -> retention.RetentionResult:
    """A real apply, two hours in the future (min_age = 1h would keep every backup just taken)."""
    try:
        return retention.apply_from_settings(
            load_settings(env["config"]), "main", now=datetime.now(UTC) + timedelta(hours=2)
        )
    finally:
        chown_tree(env["repo"])  # markers/locks directories created by this (root) process


@pytest.fixture(scope="module")
def env(pg_bin_dir):
    bin_dir = f'pg_bin_dir = "{pg_bin_dir}"\n'
    retention = '[clusters.main.retention]\nkeep_last = 2\nmin_age = "1h"\n'
    render = lambda workdir, port: config_text(workdir, port, cluster=bin_dir, extra=retention)  # noqa: E731
    with archiving_env(pg_bin_dir, "opsdb-retention-", render) as e:
        primary, workdir, config = e["primary"], e["workdir"], e["config"]
        # the same cluster and repository with min_age = 1s: a CLI dry run that would delete something
        e["preview"] = workdir / "preview.toml"
        e["preview"].write_text(config.read_text().replace('min_age = "1h"', 'min_age = "1s"'))
        chown_tree(workdir)
        key = load_key(key_file=workdir / "key")
        e.update(repo=workdir / "repo", storage=LocalStorage(str(workdir / "repo")), keys={key.id: key})

        x(primary, "CREATE TABLE t (id int primary key, note text)")
        e["b1"] = backup(e)
        x(primary, "INSERT INTO t VALUES (1, 'after the first backup')")
        e["t1"] = now_between(primary)  # only the first backup reaches this point
        x(primary, "INSERT INTO t VALUES (10, 'still before the second backup')")
        wait_archived(primary)
        e["b2"] = backup(e)
        x(primary, "INSERT INTO t VALUES (2, 'after the second backup')")
        e["t2"] = now_between(primary)
        x(primary, "INSERT INTO t VALUES (3, 'after the target')")
        wait_archived(primary)
        e["b3"] = backup(e)
        x(primary, "INSERT INTO t VALUES (4, 'after the third backup')")
        wait_archived(primary)
        yield e


# The module is one story: a dry run, a first retention run, a PITR whose promotion archives timeline 2,
# a second run. Each step is a module fixture that asks for the step before it, so every test runs
# alone (-k) or in any order and still sees the repository in the state its step describes.


@pytest.fixture(scope="module")
def preview(env):
    """The dry run, before anything is deleted: the repository listing around it and what it printed."""
    before = listing(env["repo"])
    oldest_wal = segments(env, 1)[0]
    doc = json.loads(run(env, "--json", "retention", "apply", "--dry-run", config=env["preview"]).stdout)
    human = run(env, "retention", "apply", "--dry-run", config=env["preview"]).stdout
    # before retention, the first backup still reaches t1
    unused = str(env["factory"].new_dir() / "data")
    reach = run(env, "restore", "--target-dir", unused, "--to-time", env["t1"], "--dry-run", check=False)
    after = listing(env["repo"])
    return {"before": before, "after": after, "doc": doc, "human": human, "reach_t1": reach, "oldest_wal": oldest_wal}


@pytest.fixture(scope="module")
def first_run(env, preview):
    """Retention's first run (after the dry run): the WAL it was to delete, and its result."""
    cutoff = start_segment(env["b2"])
    doomed = [f.wal.name for f in archive(env) if f.wal.kind != "history" and f.wal.segno < cutoff]
    return doomed, apply_now(env)


@pytest.fixture(scope="module")
def restored(env, first_run):
    """A PITR to t2 after the first run, started with archive-mode keep (it archives timeline 2): where
    it runs, its --json summary, and a dry run to t1 (only the deleted backup reached it)."""
    factory = env["factory"]
    dest = factory.new_dir() / "data"
    port = free_port()
    factory._made.append((Instance(dest, port, factory.bin_dir, os_user(), LocalRunner()), dest.parent))
    proc = run(
        env,
        "--json",
        "restore",
        "--target-dir",
        str(dest),
        "--to-time",
        env["t2"],
        "--start",
        "--port",
        str(port),
        "--archive-mode",
        "keep",
        as_root=True,  # it archives timeline 2, which the second run expires
    )
    unused = str(factory.new_dir() / "data")
    gone = run(env, "restore", "--target-dir", unused, "--to-time", env["t1"], "--dry-run", check=False)
    return dest, port, json.loads(proc.stdout), gone


def test_dry_run_through_the_cli_changes_nothing(env, preview):
    assert start_segment(env["b1"]) < start_segment(env["b2"])
    assert preview["oldest_wal"] <= start_segment(env["b1"])  # WAL before the second backup is there to expire
    assert preview["after"] == preview["before"]
    doc = preview["doc"]
    assert doc["dry_run"] is True
    actions = {b["id"]: b["action"] for b in doc["backups"]}
    assert actions == {env["b1"]["id"]: "delete", env["b2"]["id"]: "keep", env["b3"]["id"]: "keep"}
    assert doc["summary"]["wal_files_deleted"] > 0
    assert "dry run: nothing changed" in preview["human"] and f"delete backup {env['b1']['id']}" in preview["human"]
    assert preview["reach_t1"].returncode == 0, preview["reach_t1"].stderr


def test_apply_deletes_the_oldest_backup_and_the_wal_before_the_oldest_retained_start(env, preview, first_run):
    cutoff = start_segment(env["b2"])
    doomed, result = first_run
    assert doomed
    assert result.deleted_backups == [env["b1"]["id"]]
    assert [r.id for r in catalog.list_backups(env["storage"], "main", env["keys"])] == [
        env["b2"]["id"],
        env["b3"]["id"],
    ]
    assert not list(env["storage"].list(f"clusters/main/backups/{env['b1']['id']}/"))
    assert segments(env, 1)[0] == cutoff  # the oldest retained backup's start segment stays, nothing before it
    assert not [f for f in archive(env) if f.wal.kind != "history" and f.wal.segno < cutoff]
    assert result.wal_files_deleted == len(doomed)
    assert not list(env["storage"].list("clusters/main/locks/"))
    assert not list(env["storage"].list("clusters/main/deleting/"))
    # the dry run announced exactly this
    assert preview["doc"]["summary"]["wal_files_deleted"] == result.wal_files_deleted
    assert [w["first"] for w in preview["doc"]["wal"]] == [w.first for w in result.wal]


def test_pitr_after_the_oldest_retained_backup_gives_exactly_its_rows(env, restored):
    dest, port, doc, gone = restored
    assert doc["backup_id"] == env["b2"]["id"]
    assert rows(port) == [1, 2, 10]
    # the deleted backup took its reach with it: a point only the first backup reached is refused
    assert gone.returncode == 2, gone.stderr


def test_second_run_keeps_history_files_and_expires_wal_on_every_timeline(env, restored):
    dest, port = restored[:2]
    history = "00000002.history"
    wait_until(lambda: history in {f.wal.name for f in archive(env)}, f"{history} archived", timeout=60, interval=0.2)
    restored = Instance(dest, port, env["factory"].bin_dir, os_user(), LocalRunner())
    wait_archived(restored)  # the first segment of timeline 2 (before the third backup's start) is archived
    restored.stop()
    b4 = backup(env)
    x(env["primary"], "INSERT INTO t VALUES (5, 'after the fourth backup')")
    wait_archived(env["primary"])
    cutoff = start_segment(env["b3"])
    assert segments(env, 2) and segments(env, 2)[0] < cutoff
    result = apply_now(env)
    assert result.deleted_backups == [env["b2"]["id"]]
    assert [r.id for r in catalog.list_backups(env["storage"], "main", env["keys"])] == [env["b3"]["id"], b4["id"]]
    left = archive(env)
    assert history in {f.wal.name for f in left}
    assert not [f for f in left if f.wal.kind != "history" and f.wal.segno is not None and f.wal.segno < cutoff]
    assert segments(env, 1)[0] == cutoff and all(segno >= cutoff for segno in segments(env, 2))
