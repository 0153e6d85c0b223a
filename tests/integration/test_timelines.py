"""Timelines after a side-by-side PITR, on a real archiving primary.

The usual incident move, `restore --to-time T --start` into a new directory next to the primary,
must leave the repository alone (archive_mode off in the copy). A repository that does hold a
copy's branch anyway (an older opsdb, or a copy restored with `--archive-mode keep`) must not
mislead: `info` marks which timeline the primary is on and which have backups, a default `restore`
and a `drill` follow the primary's timeline, `--timeline latest` follows the branch, `--immediate`
takes the newest backup, and a refusal names every timeline that reaches the target.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from tests.fixtures.pg import free_port
from tests.integration.archiving_env import (
    archiving_env,
    backup,
    chown_tree,
    config_text,
    now_between,
    restore_started,
    rows,
    run,
)
from tests.integration.test_pitr import v, wait_archived, x

pytestmark = pytest.mark.integration
HISTORY = "clusters/main/wal/history/00000002.history"


def _config(pg_bin_dir: Path) -> Callable[[Path, int], str]:
    bin_dir, drill = f'pg_bin_dir = "{pg_bin_dir}"\n', "[drill]\nlargest_tables = 1\n"
    return lambda workdir, port: config_text(workdir, port, cluster=bin_dir, extra=drill)


@pytest.fixture(scope="module")
def env(pg_bin_dir: Path) -> Iterator[dict[str, Any]]:
    with archiving_env(pg_bin_dir, "opsdb-timelines-", _config(pg_bin_dir)) as e:
        primary, workdir = e["primary"], e["workdir"]
        # the same repository with the primary unreachable: the newest backup says which line it is on
        e["offline"] = workdir / "offline.toml"
        e["offline"].write_text(_config(pg_bin_dir)(workdir, free_port()))
        chown_tree(workdir)
        x(primary, "CREATE TABLE t (id int primary key, note text)")
        run(e, "heartbeat")
        e["b1"] = backup(e)
        x(primary, "INSERT INTO t VALUES (1, 'before the mistake')")
        e["t1"] = now_between(primary)
        x(primary, "INSERT INTO t VALUES (2, 'the mistake')")
        wait_archived(primary)
        yield e


def _side_by_side(env: dict[str, Any], *args: str) -> tuple[dict[str, Any], Instance]:
    return restore_started(env, "--to-time", env["t1"], *args)


def _stored(env: dict[str, Any], key: str) -> bool:
    return (env["workdir"] / "repo" / key).exists()


def test_a_side_by_side_pitr_does_not_archive_into_the_repository(env: dict[str, Any]) -> None:
    doc, copy = _side_by_side(env)
    assert doc["archive_mode"] == "off" and rows(copy.port) == [1]
    x(copy, "INSERT INTO t VALUES (100, 'written on the copy')")
    x(copy, "SELECT pg_switch_wal()")
    x(copy, "CHECKPOINT")
    assert v(copy, "SHOW archive_mode") == "off"  # no archiver at all: nothing to wait for
    assert not _stored(env, HISTORY)
    copy.stop()


def test_after_a_copy_archived_its_branch_everything_still_follows_the_primary(env: dict[str, Any]) -> None:
    primary = env["primary"]
    doc, copy = _side_by_side(env, "--archive-mode", "keep")  # what every restore did before
    assert doc["archive_mode"] == "keep"
    x(copy, "INSERT INTO t VALUES (100, 'written on the copy')")
    wait_archived(copy)
    assert _stored(env, HISTORY)
    copy.stop()
    x(primary, "INSERT INTO t VALUES (3, 'the primary carries on')")
    run(env, "heartbeat")
    env["t3"] = now_between(primary)
    x(primary, "INSERT INTO t VALUES (4, 'later still')")
    wait_archived(primary)
    b2 = backup(env)
    run(env, "heartbeat")
    wait_archived(primary)

    info = json.loads(run(env, "--json", "info").stdout)
    assert info["timeline"] == 1 and info["newest_timeline"] == 2 and info["live_timeline"] == 1
    by_tli = {t["timeline"]: t for t in info["timelines"]}
    assert by_tli[1]["backups"] == 2 and by_tli[1]["primary_line"] and by_tli[1]["live"]
    assert by_tli[2]["backups"] == 0 and by_tli[2]["parent"] == 1 and not by_tli[2]["primary_line"]
    assert "the primary is not on it" in by_tli[2]["note"]
    # the window shown is the primary's, which goes on after the copy's branch stopped
    window_end = datetime.fromisoformat(info["recoverable_to"])
    assert window_end > datetime.fromisoformat(env["t3"]) > datetime.fromisoformat(by_tli[2]["recoverable_to"])
    text = run(env, "info").stdout
    assert "timeline 1: 2 backup(s), the primary is live on it" in text
    assert "timeline 2, branched from 1 at" in text and "the primary is not on it" in text

    unused = str(env["factory"].new_dir() / "data")
    for config, source in ((env["config"], "live primary"), (env["offline"], "newest backup")):
        plan = json.loads(run(env, "--json", "restore", "--target-dir", unused, "--dry-run", config=config).stdout)
        recovery = plan["plan"]["recovery"]
        assert plan["backup_id"] == b2["id"] and recovery["target"]["timeline"] == 1
        assert f"the {source}'s" in recovery["timeline_choice"] and "--timeline latest" in recovery["timeline_choice"]
    shown = run(env, "restore", "--target-dir", unused, "--dry-run").stdout
    assert "timeline: timeline 1, the live primary's (the archive also has timeline 2: --timeline latest)" in shown
    latest = json.loads(
        run(env, "--json", "restore", "--target-dir", unused, "--dry-run", "--timeline", "latest").stdout
    )
    assert latest["plan"]["recovery"]["target"]["timeline"] == 2
    immediate = json.loads(run(env, "--json", "restore", "--target-dir", unused, "--dry-run", "--immediate").stdout)
    assert immediate["backup_id"] == b2["id"]

    # a point only timeline 1 reaches, asked on the branch: the refusal names timeline 1 and its flag
    refused = run(
        env, "restore", "--target-dir", unused, "--dry-run", "--timeline", "latest", "--to-time", env["t3"], check=False
    )
    assert refused.returncode == 2 and "reachable on timeline 1 (--timeline 1)" in refused.stderr
    on_one = run(env, "--json", "restore", "--target-dir", unused, "--dry-run", "--to-time", env["t3"])
    assert json.loads(on_one.stdout)["plan"]["recovery"]["target"]["timeline"] == 1

    # the default restore, started, has the primary's rows; a drill follows the primary too
    _, restored = restore_started(env)
    assert rows(restored.port) == [1, 2, 3, 4]
    restored.stop()
    drill = run(env, "--json", "drill", as_root=True, check=False)
    report = json.loads(drill.stdout)
    assert report["result"] == "pass", [c for c in report["checks"] if c["status"] != "pass"]
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert details["WAL coverage"].endswith("on timeline 1") and details["row counts"] == "postgres.public.t: 4"


def test_a_restore_that_replaced_the_lost_primary_is_followed_without_asking_it(env: dict[str, Any]) -> None:
    """The primary is gone and a restore to the end of its WAL replaced it, archiving. Nobody answers
    at conninfo and no backup was taken on the new timeline yet: restore and info follow that
    promotion (timeline 1 archived nothing after it), not the copy's earlier branch, nor timeline 1."""
    primary = env["primary"]
    x(primary, "INSERT INTO t VALUES (5, 'last on the old primary')")
    wait_archived(primary)
    primary.stop()
    doc, new = restore_started(env, "--archive-mode", "keep")
    assert doc["archive_mode"] == "keep" and rows(new.port) == [1, 2, 3, 4, 5]
    with connect(new.conninfo(), timeout=10) as conn:
        promoted = conn.live_timeline()
    assert promoted > 2  # 2 is the copy's branch, already archived
    x(new, "INSERT INTO t VALUES (6, 'on the new primary')")
    wait_archived(new)
    new.stop()  # conninfo never pointed at it: the archive alone must tell

    info = json.loads(run(env, "--json", "info").stdout)
    assert info["live_timeline"] is None and info["timeline"] == promoted
    assert info["timeline_choice"].startswith(f"timeline {promoted}, promoted where the newest backup's timeline 1")
    by_tli = {t["timeline"]: t for t in info["timelines"]}
    assert by_tli[1]["primary_line"] and by_tli[promoted]["primary_line"] and not by_tli[2]["primary_line"]
    assert by_tli[2]["note"].startswith("a branch the primary is not on")
    text = run(env, "info").stdout
    assert f"restore and drill follow timeline {promoted}, promoted where" in text

    plan = json.loads(
        run(env, "--json", "restore", "--target-dir", str(env["factory"].new_dir() / "data"), "--dry-run").stdout
    )
    assert plan["plan"]["recovery"]["target"]["timeline"] == promoted
    _, restored = restore_started(env)
    assert rows(restored.port) == [1, 2, 3, 4, 5, 6]
    restored.stop()
    drill = run(env, "--json", "drill", as_root=True, check=False)
    report = json.loads(drill.stdout)
    assert report["result"] == "pass", [c for c in report["checks"] if c["status"] != "pass"]
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert details["WAL coverage"].endswith(f"on timeline {promoted}")
    assert details["row counts"] == "postgres.public.t: 6"  # row 6 exists only on the new primary's timeline
