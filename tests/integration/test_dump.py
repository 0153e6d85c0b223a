"""opsdb dump -> restore-dump into another server: identical data, globals without passwords, refusals."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
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
    pg_cluster: Instance, s3_url: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory, pg_major: int
) -> Iterator[dict[str, Any]]:
    s3_url = f"{s3_url}-pg{pg_major}"  # the module runs once per major; the bucket is shared
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


def test_the_dump_estimate_is_near_what_pg_dump_writes(env: dict[str, Any]) -> None:
    """The bar's total for a dump on a terminal: the tables' data, within a factor of what was dumped."""
    from opsdb.ops.common.estimate import dump_bytes

    dump = opsdb_json(env["config"], "dump", "--database", "app")
    estimate = dump_bytes(env["source"].conninfo(), ("app",))
    assert estimate is not None and dump["size_bytes"] / 3 < estimate < dump["size_bytes"] * 3, (estimate, dump)
    everything = dump_bytes(env["source"].conninfo())
    assert everything is not None and everything >= estimate  # no names: every non-template database
    assert dump_bytes(env["source"].conninfo(), ("no such database",)) is None  # never fails the dump


def test_dump_of_named_databases_and_unknown_names(env: dict[str, Any]) -> None:
    dump = opsdb_json(env["config"], "dump", "--database", "odd name")
    assert dump["databases"] == ["odd name"]
    bad = opsdb(env["config"], "dump", "--database", "nope", check=False)
    assert bad.returncode == 2 and "no such database" in bad.stderr
    wrong_kind = opsdb(
        env["config"], "restore", "--target-dir", "/tmp/never-created", "--backup", dump["id"], check=False
    )
    assert wrong_kind.returncode == 2 and "restore-dump" in wrong_kind.stderr


def _database_ddl(pg_bin_dir: Path, conninfo: str, name: str, rename_to: str | None = None) -> list[str]:
    """`pg_dump --create --schema-only` of one database: what a restore must reproduce (comments,
    blank lines and psql's per-run \\restrict keys left out; the name made the same when renamed)."""
    out = subprocess.run(
        [str(pg_bin_dir / "pg_dump"), "--create", "--schema-only", "-d", with_dbname(conninfo, name)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith(("--", "\\restrict", "\\unrestrict"))]
    if rename_to is not None:
        lines = [
            ln.replace('"prop db"', f'"{rename_to}"').replace("dbname='prop db'", f"dbname='{rename_to}'")
            for ln in lines
        ]
    return lines


def test_restore_dump_recreates_the_database_with_its_properties(
    env: dict[str, Any], make_cluster: Any, pg_bin_dir: Path
) -> None:
    with connect(env["source"].conninfo()) as c:
        c.execute("CREATE ROLE prop_owner LOGIN")
        c.execute("CREATE ROLE prop_reader")
        c.execute(
            "CREATE DATABASE \"prop db\" OWNER prop_owner TEMPLATE template0 ENCODING 'LATIN1' "
            "LC_COLLATE 'C' LC_CTYPE 'C' CONNECTION LIMIT 7"
        )
        c.execute("COMMENT ON DATABASE \"prop db\" IS 'orders archive, owned by billing'")
        c.execute('REVOKE ALL ON DATABASE "prop db" FROM PUBLIC')
        c.execute('GRANT CONNECT, TEMPORARY ON DATABASE "prop db" TO prop_reader')
        c.execute("ALTER DATABASE \"prop db\" SET work_mem = '7MB'")
        c.execute('ALTER DATABASE "prop db" SET search_path = archive, public')
        c.execute("ALTER ROLE prop_reader IN DATABASE \"prop db\" SET statement_timeout = '5s'")
    source_db = with_dbname(env["source"].conninfo(), "prop db")
    with connect(source_db) as c:
        c.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        c.execute("INSERT INTO kept SELECT g, 'row ' || g FROM generate_series(1, 100) g")
    expected = _database_ddl(pg_bin_dir, env["source"].conninfo(), "prop db")
    assert any("LATIN1" in ln for ln in expected) and any("work_mem" in ln for ln in expected)
    dump = opsdb_json(env["config"], "dump", "--database", "prop db")

    target = make_cluster()
    done = opsdb_json(
        env["config"], "restore-dump", dump["id"], "--dbname", target.conninfo(), "-d", "prop db", "--globals"
    )
    assert done["created"] == ["prop db"]
    assert _database_ddl(pg_bin_dir, target.conninfo(), "prop db") == expected

    # under another name, next to the original (its contents and properties, not its name)
    renamed = opsdb_json(
        env["config"], "restore-dump", dump["id"], "--dbname", target.conninfo(), "-d", "prop db", "--as", "prop copy"
    )
    assert renamed["databases"] == ["prop copy"] and renamed["created"] == ["prop copy"]
    assert _database_ddl(pg_bin_dir, target.conninfo(), "prop copy") == [
        ln for ln in _database_ddl(pg_bin_dir, env["source"].conninfo(), "prop db", rename_to="prop copy")
    ]
    with connect(with_dbname(target.conninfo(), "prop copy")) as c:
        assert c.fetchval("SELECT count(*) FROM kept") == 100

    both = opsdb_json(env["config"], "dump", "--database", "prop db", "--database", "odd name")
    refused = opsdb(env["config"], "restore-dump", both["id"], "--dbname", target.conninfo(), "--as", "x", check=False)
    assert refused.returncode == 2 and "--as renames one database, but 2 are chosen" in refused.stderr
