"""The key rotation procedure of docs/encryption.md, end to end on a real archiving cluster.

Key A writes a backup and WAL; the config is rotated to key B with A in `encryption.read_key_files`;
B writes a backup and WAL. Then every read path works across both keys (backups list, info,
verify, a PITR from the old backup replaying WAL of both keys, a default restore of the new one),
retention expires the old backup and its WAL, and A is retired: everything still reads, and
`verify` proves nothing needs A any more. Before retention, a config without A names A's id and
does not suggest generating a key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsdb.stream.crypto import generate_key_file, load_key
from tests.fixtures.pg import bin_dir_of_server
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
from tests.integration.test_pitr import wait_archived, x

pytestmark = pytest.mark.integration


def _config(workdir: Path, port: int, key: str, read_keys: list[str]) -> str:
    conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    bin_dir = f'pg_bin_dir = "{bin_dir_of_server(conninfo)}"\n' if port else ""  # the server's major
    return config_text(
        workdir,
        port,
        key=key,
        encryption=f"read_key_files = {json.dumps([str(workdir / k) for k in read_keys])}\n",
        cluster=bin_dir,
        extra='[clusters.main.retention]\nkeep_last = 1\nmin_age = "1s"\n',
    )


@pytest.fixture(scope="module")
def env(pg_bin_dir: Path) -> Iterator[dict[str, Any]]:
    render = lambda workdir, port: _config(workdir, port, "a.key", [])  # noqa: E731
    with archiving_env(pg_bin_dir, "opsdb-rotation-", render, key="a.key") as e:
        e["key_a"] = load_key(key_file=e["workdir"] / "a.key")
        yield e


def _rotate(env: dict[str, Any], key: str, read_keys: list[str]) -> None:
    env["config"].write_text(_config(env["workdir"], env["primary"].port, key, read_keys))
    chown_tree(env["workdir"])


def _restore(env: dict[str, Any], *args: str) -> tuple[dict[str, Any], int]:
    doc, instance = restore_started(env, *args)
    return doc, instance.port


def test_rotation_end_to_end(env: dict[str, Any]) -> None:
    primary = env["primary"]
    x(primary, "CREATE TABLE t (id int primary key, note text)")
    old = backup(env)
    x(primary, "INSERT INTO t VALUES (1, 'written while key A wrote')")
    wait_archived(primary)

    # rotate: B writes, A reads
    key_b = generate_key_file(env["workdir"] / "b.key")
    _rotate(env, "b.key", ["a.key"])
    x(primary, "INSERT INTO t VALUES (2, 'written after the rotation')")
    target = now_between(primary)
    x(primary, "INSERT INTO t VALUES (3, 'after the target')")
    wait_archived(primary)
    new = backup(env)
    x(primary, "INSERT INTO t VALUES (4, 'after the new backup')")
    wait_archived(primary)

    listed = json.loads(run(env, "--json", "backups", "list").stdout)["backups"]
    assert [b["id"] for b in listed] == [old["id"], new["id"]]
    for made, key in ((old, env["key_a"]), (new, key_b)):
        assert json.loads(run(env, "--json", "backups", "show", made["id"]).stdout)["key_id"] == key.id
    assert run(env, "info").returncode == 0
    verified = json.loads(run(env, "--json", "verify").stdout)
    assert verified["result"] == "pass", verified["problems"]

    # the old backup, replaying WAL written with A and then with B, to a point after the rotation
    doc, port = _restore(env, "--backup", old["id"], "--to-time", target)
    assert doc["backup_id"] == old["id"] and rows(port) == [1, 2]
    doc, port = _restore(env)  # the default: the newest backup (key B), to the end of the archive
    assert doc["backup_id"] == new["id"] and rows(port) == [1, 2, 3, 4]

    # without A, reads say which key id they need and do not suggest generating one
    _rotate(env, "b.key", [])
    missing = run(env, "backups", "list", check=False)
    assert missing.returncode == 1 and env["key_a"].id in missing.stderr and "read_key_files" in missing.stderr
    assert "key generate" not in missing.stderr
    _rotate(env, "b.key", ["a.key"])

    # expire the old backup (keep_last = 1) with both keys, then retire A
    expired = json.loads(run(env, "--json", "retention", "apply").stdout)
    assert [b["id"] for b in expired["backups"] if b["action"] == "delete"] == [old["id"]]
    _rotate(env, "b.key", [])
    (env["workdir"] / "a.key").unlink()
    listed = json.loads(run(env, "--json", "backups", "list").stdout)["backups"]
    assert [b["id"] for b in listed] == [new["id"]]
    assert run(env, "info").returncode == 0
    verified = json.loads(run(env, "--json", "verify").stdout)
    assert verified["result"] == "pass", verified["problems"]  # nothing left needs key A
    doc, port = _restore(env)
    assert doc["backup_id"] == new["id"] and rows(port) == [1, 2, 3, 4]
