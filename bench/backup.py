"""Benchmark: `opsdb backup` and `opsdb restore` of a pgbench database against the two pipe limits.

    .venv/bin/python bench/backup.py [--scale 100] [--level 1] [--threads 2] [--repeat 3] [--keep] [--out FILE.json]

Builds a throwaway cluster (initdb as postgres, pgbench -i -s SCALE), starts a moto S3 server on
127.0.0.1 and measures, in one run, each row in its own child tree (os.wait4: CPU = user+sys of the
whole tree, peak RSS = the largest process in it):

  backup limit   pg_basebackup -Ft -X fetch -D - | zstd -1 -T2 > /dev/null
  opsdb backup   opsdb backup (zstd, AES-256-GCM) into s3:// on moto
  restore limit  zstd -d -c base.tar.zst | tar -x -C DIR && sync -f DIR   (the same stream, kept in a local file)
  opsdb restore  opsdb restore --target-dir DIR (from moto, decrypt, verify, extract, fsync)

MB/s = database size (sum of pg_database_size) / wall for backups, restored directory size / wall for
restores (10^6 bytes), as in /work/shared/reference/peer-performance.md. moto runs on the same 2 cores
and its CPU is not in the opsdb figures; its own CPU time is shown separately.

--repeat N runs each pair (limit, then opsdb) N times, interleaved, and reports for each row the run
with the median wall time (peak RSS: the largest of the N); every sample is kept in the JSON. On a
shared 2-core machine one row of a single pair can be off by 50 % when a neighbour wakes up.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(os.environ.get("OPSDB_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
OPSDB = str(Path(sys.executable).with_name("opsdb"))
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def measure(
    name: str, argv: list[str], *, size: int, env: dict[str, str] | None = None, cwd: str | None = None
) -> dict[str, Any]:
    """Run argv to completion; wall, CPU (tree) and peak RSS (largest process of the tree) via wait4.

    Every row starts with no dirty page cache (os.sync): otherwise a row pays for writing back what
    the row before it extracted (1.5 GB at scale 100), which skewed the restore rows by order."""
    os.sync()
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return {
        "name": name,
        "wall_s": round(wall, 2),
        "mb_s": round(size / wall / 1e6, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "command": " ".join(argv) if len(" ".join(argv)) < 140 else " ".join(argv)[:137] + "...",
    }


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def median_row(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample with the median wall time (the lower middle one for an even count), with the
    largest peak RSS of all samples and every sample's wall, MB/s and RSS kept alongside."""
    ordered = sorted(samples, key=lambda r: r["wall_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in samples)
    row["samples"] = [{k: r[k] for k in ("wall_s", "mb_s", "cpu_s", "peak_rss_mb") if k in r} for r in samples]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--level", type=int, default=1, help="zstd level for opsdb (the limit uses -1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="opsdb's compression.threads: 2 (its default) uses zstd workers as the limit's -T2 does; "
        "0 compresses on the pipe reader's thread (about 5 MB less RSS, slower here)",
    )
    parser.add_argument(
        "--opsdb",
        default=OPSDB,
        help="the opsdb console script to measure (another interpreter's install; moto and "
        "the bench keep running on this one)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="run each limit/opsdb pair this many times, interleaved; medians"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--out", help="also write the JSON summary to this file (e.g. bench/results/backup-DATE-runN.json)"
    )
    args = parser.parse_args()

    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews single runs
    work = Path(tempfile.mkdtemp(prefix="opsdb-bench-backup-", dir="/tmp"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(work, entry.pw_uid, entry.pw_gid)
    data, port = work / "data", free_port()
    moto = None
    rows: list[dict[str, Any]] = []
    try:
        subprocess.run(
            as_postgres([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-k"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with open(data / "postgresql.auto.conf", "a") as fh:
            fh.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "shared_buffers = '1GB'\nwal_level = replica\nmax_wal_size = '16GB'\nsynchronous_commit = off\n"
            )
        subprocess.run(
            as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(work / "pg.log"), "-w", "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        t0 = time.monotonic()
        subprocess.run(
            [str(BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), "-d", conninfo],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        size = int(
            subprocess.run(
                [str(BIN / "psql"), "-d", conninfo, "-Atc", "select sum(pg_database_size(oid)) from pg_database"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        print(f"pgbench -i -s {args.scale}: {size / 1e6:.0f} MB in {time.monotonic() - t0:.1f} s", file=sys.stderr)

        mport = free_port()
        endpoint = f"http://127.0.0.1:{mport}"
        moto = subprocess.Popen(
            [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(mport)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="opsdb-bench")
        key = work / "repo.key"
        subprocess.run([OPSDB, "key", "generate", str(key)], check=True, capture_output=True)
        config = work / "opsdb.toml"
        config.write_text(
            f'[repository]\nurl = "s3://opsdb-bench/repo"\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\n'
            f'[encryption]\nkey_file = "{key}"\nrequired = true\n'
            f'[compression]\nalgorithm = "zstd"\nlevel = {args.level}\nthreads = {args.threads}\n'
            f'[clusters.main]\nconninfo = "{conninfo}"\npg_bin_dir = "{BIN}"\nos_user = "postgres"\n'
        )
        basebackup = f"{BIN}/pg_basebackup -d '{conninfo}' -Ft -X fetch -c fast -D -"

        samples: list[list[dict[str, Any]]] = [[], [], [], []]
        for _ in range(args.repeat):
            samples[0].append(
                measure(
                    "backup limit: pg_basebackup | zstd -1 -T2 > /dev/null",
                    ["bash", "-c", f"set -o pipefail; {basebackup} | zstd -q -1 -T2 > /dev/null"],
                    size=size,
                )
            )
            moto_before = proc_cpu(moto.pid)
            row = measure(
                "opsdb backup (zstd, AES-256-GCM) -> moto S3",
                [args.opsdb, "--config", str(config), "backup"],
                size=size,
            )
            row["moto_cpu_s"] = round(proc_cpu(moto.pid) - moto_before, 2)
            samples[1].append(row)

        stream = work / "base.tar.zst"
        subprocess.run(["bash", "-c", f"set -o pipefail; {basebackup} | zstd -q -1 -T2 > {stream}"], check=True)
        for _ in range(args.repeat):
            limit_dir = work / "limit-restore"
            limit_dir.mkdir()
            # synced like opsdb restore (fsync by default since issue 16): `sync -f` is syncfs(2)
            row = measure(
                "restore limit: zstd -d | tar -x; sync -f",
                ["bash", "-c", f"zstd -q -d -c {stream} | tar -x -C {limit_dir} && sync -f {limit_dir}"],
                size=dir_size(work / "data"),
            )
            row["mb_s"] = round(dir_size(limit_dir) / row["wall_s"] / 1e6, 1)
            samples[2].append(row)
            shutil.rmtree(limit_dir)
            target = work / "restored"
            moto_before = proc_cpu(moto.pid)
            row = measure(
                "opsdb restore <- moto S3 (decrypt, verify, extract)",
                [args.opsdb, "--config", str(config), "restore", "--target-dir", str(target)],
                size=0,
            )
            row["moto_cpu_s"] = round(proc_cpu(moto.pid) - moto_before, 2)
            row["mb_s"] = round(dir_size(target) / row["wall_s"] / 1e6, 1)
            samples[3].append(row)
            shutil.rmtree(target)
        rows = [median_row(kind) for kind in samples]
    finally:
        subprocess.run(
            as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"\npgbench scale {args.scale}: {size / 1e6:.0f} MB; opsdb zstd level {args.level}, {args.threads} threads, "
        f"encrypted; median of {args.repeat} interleaved run(s) per row\n"
    )
    print(f"{'row':<52} {'wall s':>7} {'MB/s':>7} {'CPU s':>7} {'RSS MB':>7} {'moto CPU s':>10}")
    for r in rows:
        print(
            f"{r['name']:<52} {r['wall_s']:>7} {r['mb_s']:>7} {r['cpu_s']:>7} {r['peak_rss_mb']:>7} {r.get('moto_cpu_s', '-'):>10}"
        )
    backup_ratio = rows[1]["mb_s"] / rows[0]["mb_s"]
    restore_ratio = rows[3]["mb_s"] / rows[2]["mb_s"]
    backup_pairs = [
        round(o["mb_s"] / lim["mb_s"], 3) for lim, o in zip(rows[0]["samples"], rows[1]["samples"], strict=True)
    ]
    restore_pairs = [
        round(o["mb_s"] / lim["mb_s"], 3) for lim, o in zip(rows[2]["samples"], rows[3]["samples"], strict=True)
    ]
    print(
        f"\nopsdb backup = {backup_ratio:.0%} of the backup limit (aim >= 70%); "
        f"opsdb restore = {restore_ratio:.0%} of the restore limit (aim >= 65%)"
    )
    print(
        f"each pair: backup {', '.join(f'{r:.0%}' for r in backup_pairs)}; "
        f"restore {', '.join(f'{r:.0%}' for r in restore_pairs)}"
    )
    summary = {
        "scale": args.scale,
        "database_bytes": size,
        "level": args.level,
        "threads": args.threads,
        "repeat": args.repeat,
        "opsdb": args.opsdb,
        "load_average_before": load_before,
        "rows": rows,
        "backup_ratio": round(backup_ratio, 3),
        "restore_ratio": round(restore_ratio, 3),
        "backup_pair_ratios": backup_pairs,
        "restore_pair_ratios": restore_pairs,
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
