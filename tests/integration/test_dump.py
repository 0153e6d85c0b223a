"""opsdb dump -> restore-dump into another server: identical data, globals without passwords, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from opsdb.pg.conn import connect
from opsdb.pg.conninfo import with_dbname
from opsdb.pg.instance import Instance
from opsdb.repo import envelope, layout
from opsdb.storage import open_storage
from opsdb.stream.crypto import load_key
from tests.integration.backup_env import make_tables, opsdb, opsdb_json, table_checksums, write_config

pytestmark = pytest.mark.integration
TABLES = ["orders", "customers"]


@pytest.fixture(scope="module")
def env(
    pg_cluster: Instance, s3_url: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    with connect(pg_cluster.conninfo()) as c:
        c.execute("CREATE ROLE app_owner LOGIN PASSWORD 'sekret-pw-123'")
        c.execute("CREATE DATABASE app OWNER app_owner")
        c.execute('CREATE DATABASE "odd name"')
    app = with_dbname(pg_cluster.conninfo(), "app")
    make_tables(app)
    with connect(app) as c:
        c.execute("ALTER TABLE orders OWNER TO app_owner")
    work = tmp_path_factory.mktemp("dump")
    config = write_config(work, url=s3_url, conninfo=pg_cluster.conninfo(), endpoint_url=moto_endpoint)
    yield {
        "config": config,
        "work": work,
        "source": pg_cluster,
        "app": app,
        "s3_url": s3_url,
        "endpoint": moto_endpoint,
    }


def test_dump_and_restore_dump_give_identical_data(env: dict[str, Any], make_cluster: Any) -> None:
    dump = opsdb_json(env["config"], "dump")
    assert dump["kind"] == "logical" and dump["id"].endswith("-D")
    assert {"app", "postgres", "odd name"} <= set(dump["databases"])
    row = next(b for b in opsdb_json(env["config"], "backups", "list")["backups"] if b["id"] == dump["id"])
    assert row["start_lsn"] is None and row["status"] == "complete" and row["encrypted"] is True

    # globals: roles without their password hashes
    storage = open_storage(env["s3_url"], endpoint_url=env["endpoint"])
    key = load_key(key_file=env["work"] / "repo.key")
    sql = b"".join(envelope.get_object(storage, layout.backup_object("main", dump["id"], "globals.sql"), {key.id: key}))
    assert b"app_owner" in sql and b"SCRAM-SHA-256" not in sql

    target = make_cluster()
    before = table_checksums(env["app"], TABLES)
    result = opsdb_json(
        env["config"], "restore-dump", dump["id"], "--dbname", target.conninfo(), "--database", "app", "--globals"
    )
    assert result["databases"] == ["app"] and result["created"] == ["app"] and result["globals_restored"]
    restored = with_dbname(target.conninfo(), "app")
    assert table_checksums(restored, TABLES) == before
    with connect(restored) as c:
        assert c.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'") == "app_owner"

    # an existing non-empty database is refused (exit 2, nothing changed) ...
    with connect(restored) as c:
        c.execute("INSERT INTO customers VALUES (-1, 'added on the target', NULL)")
    changed = table_checksums(restored, TABLES)
    refused = opsdb(env["config"], "restore-dump", dump["id"], "--dbname", target.conninfo(), "-d", "app", check=False)
    assert refused.returncode == 2 and "holds" in refused.stderr and "--clean" in refused.stderr
    assert table_checksums(restored, TABLES) == changed
    # ... and replaced with --clean, also with parallel jobs (staged to a temp file)
    opsdb(
        env["config"], "restore-dump", dump["id"], "--dbname", target.conninfo(), "-d", "app", "--clean", "--jobs", "2"
    )
    assert table_checksums(restored, TABLES) == before


def test_dump_of_named_databases_and_unknown_names(env: dict[str, Any]) -> None:
    dump = opsdb_json(env["config"], "dump", "--database", "odd name")
    assert dump["databases"] == ["odd name"]
    bad = opsdb(env["config"], "dump", "--database", "nope", check=False)
    assert bad.returncode == 2 and "no such database" in bad.stderr
    wrong_kind = opsdb(
        env["config"], "restore", "--target-dir", "/tmp/never-created", "--backup", dump["id"], check=False
    )
    assert wrong_kind.returncode == 2 and "restore-dump" in wrong_kind.stderr
