"""Shared pieces of the backup / dump / restore integration tests: a config file, the CLI, table checksums."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from opsdb.pg.conn import connect
from opsdb.stream.crypto import generate_key_file
from tests.fixtures.pg import bin_dir_of_server

OPSDB = str(Path(sys.executable).with_name("opsdb"))
MARKER = "opsdb-marker-7f3a9c-plaintext-row"


def write_config(
    directory: Path,
    *,
    url: str,
    conninfo: str,
    endpoint_url: str | None = None,
    encrypted: bool = True,
    compression: str = "zstd",
    extra: str = "",
) -> Path:
    """An opsdb.toml for one cluster "main" (and a key file when encrypted)."""
    lines = ["[repository]", f'url = "{url}"']
    if endpoint_url:
        lines += [f'endpoint_url = "{endpoint_url}"', 'region = "us-east-1"']
    if encrypted:
        key = directory / "repo.key"
        if not key.exists():
            generate_key_file(key)
        lines += ["[encryption]", f'key_file = "{key}"', "required = true"]
    lines += ["[compression]", f'algorithm = "{compression}"', "level = 1"]
    lines += ["[clusters.main]", f'conninfo = "{conninfo}"', 'os_user = "postgres"']
    lines.append(f'pg_bin_dir = "{bin_dir_of_server(conninfo)}"')  # the binaries of the server's major
    path = directory / "opsdb.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def opsdb(config: Path, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a subprocess (as an operator or cron would)."""
    proc = subprocess.run(
        [OPSDB, "--config", str(config), *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"opsdb {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def opsdb_json(config: Path, *args: str) -> Any:
    proc = opsdb(config, "--json", *args)
    return json.loads(proc.stdout)


def table_checksums(conninfo: str, tables: list[str]) -> dict[str, str]:
    """md5 over each table's rows in primary-key order (identical data <=> identical digests)."""
    out = {}
    with connect(conninfo) as c:
        for table in tables:
            out[table] = c.fetchval(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t")
    return out


def make_tables(conninfo: str, tablespace: str | None = None, rows: int = 20000) -> None:
    with connect(conninfo) as c:
        c.execute("CREATE TABLE orders (id bigint PRIMARY KEY, placed timestamptz DEFAULT now(), note text)")
        c.execute(f"INSERT INTO orders (id, note) SELECT g, md5(g::text) FROM generate_series(1, {rows}) g")
        c.execute("CREATE TABLE customers (id int PRIMARY KEY, name text, tags text[])")
        c.execute(
            "INSERT INTO customers SELECT g, 'customer ' || g, ARRAY['a', g::text] FROM generate_series(1, 500) g"
        )
        c.execute("INSERT INTO customers VALUES (0, %s, NULL)", (MARKER,))
        if tablespace:
            c.execute(f"CREATE TABLE archived (id int PRIMARY KEY, payload text) TABLESPACE {tablespace}")
            c.execute("INSERT INTO archived SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 3000) g")


def make_big_table(conninfo: str, megabytes: int) -> None:
    """Poorly compressible rows, so a backup takes a while (for the kill and concurrency tests)."""
    rows = megabytes * 1024 * 1024 // 360
    with connect(conninfo) as c:
        c.execute("CREATE TABLE IF NOT EXISTS big (id bigint PRIMARY KEY, payload text)")
        c.execute(
            "INSERT INTO big SELECT g, string_agg(md5(random()::text), '') FROM generate_series(1, %s) g, "
            "generate_series(1, 10) GROUP BY g",
            (rows,),
        )
