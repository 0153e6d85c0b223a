"""Benchmark: reading the recoverable window's end (last commit, last record) at restore plan time.

    .venv/bin/python bench/walend.py [--max-commits 1000000] [--repeat 5]

Why plan time and not push time: recording commit times when archiving would put a pg_waldump (or a WAL
record parser) on wal-push, which runs once per segment on the primary's critical path. This measures
both sides on one full 16 MiB segment of many small commits (the worst case for pg_waldump's output):

- `push`: repo.wal.push of the segment into a file:// repository (zstd level 1, AES-256-GCM), the
  cost wal-push has today;
- `waldump`: pg_waldump over the plaintext segment alone, what push-time recording would add per push;
- `plan_end`: ops.recovery.pitr_reach.recovery_end, what a restore plan adds once (fetch + decrypt + pg_waldump).

A throwaway cluster (initdb as the `postgres` OS user when run as root) writes the commits; one JSON
object on stdout (medians in milliseconds), a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from opsdb.model.lsn import Lsn, segment_name
from opsdb.ops.recovery.pitr_reach import recovery_end
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.pg.tools import PgTools, find_bin_dir
from opsdb.pg.waldump import dump_segment
from opsdb.proc import LocalRunner
from opsdb.repo import wal as repo_wal
from opsdb.repo.envelope import Codec
from opsdb.storage.local import LocalStorage
from opsdb.stream.crypto import generate_key_file

SEGMENT = 16 * 1024 * 1024


def insert_lsn(conn) -> Lsn:
    return Lsn.parse(conn.fetchval("SELECT pg_current_wal_insert_lsn()::text"))


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-commits", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bin_dir = find_bin_dir(None)
    runner = LocalRunner()
    work = Path(tempfile.mkdtemp(prefix="opsdb-bench-walend-", dir="/tmp"))
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(work, user)
    instance = Instance(work / "data", 55433, bin_dir, user, runner)
    try:
        instance.initdb()
        instance.configure({"wal_level": "replica", "fsync": "off", "synchronous_commit": "off"})
        instance.start()
        with connect(instance.conninfo()) as conn:
            conn.execute("CREATE TABLE t (id int)")
            start = Lsn.parse(conn.fetchval("SELECT pg_current_wal_insert_lsn()::text"))
            for i in range(args.max_commits):  # autocommit: one commit record each
                conn.execute("INSERT INTO t VALUES (%s)", (i,))
                if i % 1000 == 0 and insert_lsn(conn).value - start.value > 2 * SEGMENT:
                    break
        segno = start.segment_number(SEGMENT) + 1  # a full segment of commits
        name = segment_name(1, segno)
        source = work / "data" / "pg_wal" / name
        plain = work / "plain"
        plain.mkdir()
        shutil.copy(source, plain / name)
        key = generate_key_file(work / "key")
        storage = LocalStorage(work / "repo")
        codec = Codec("zstd", 1, 0, key, True)
        keys = {key.id: key}
        tools = PgTools(bin_dir)
        push_ms = []
        for n in range(args.repeat):  # a fresh cluster name per push: create-only never conflicts
            began = time.perf_counter()
            repo_wal.push(storage, f"c{n}", name, lambda: repo_wal.read_file(str(source)), codec, keys)
            push_ms.append((time.perf_counter() - began) * 1000)
        found = dump_segment(tools, runner, plain, name)
        result = {
            "segment": name,
            "last_record": str(found.last_lsn),
            "last_commit": found.last_stop_record,
            "push_ms": round(statistics.median(push_ms), 1),
            "waldump_ms": median_ms(lambda: dump_segment(tools, runner, plain, name), args.repeat),
            "plan_end_ms": median_ms(
                lambda: recovery_end(storage, "c0", keys, [name], bin_dir=bin_dir, runner=runner), args.repeat
            ),
        }
        for k in ("push_ms", "waldump_ms", "plan_end_ms"):
            sys.stderr.write(f"{k:12} {result[k]:8.1f}\n")
        print(json.dumps(result))
    finally:
        instance.stop(mode="immediate")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
