"""Benchmark: CPU seconds and wall time of one full backup, opsdb (server- and client-compressed)
beside pgBackRest, in the same run, on the same cluster, into local (posix) repositories.

    python bench/backup_cpu.py [--scale 100] [--rounds 3] [--opsdb .venv/bin/opsdb]

On a shared 2-core machine wall time swings with the neighbours; CPU time is what a backup costs
the machine and swings far less. For each row: wall, CPU of the tool's own process tree (os.wait4),
and CPU of the server's processes (the postmaster's children, sampled every 0.1 s from /proc, so a
backend that exits between samples loses at most its last 0.1 s). Both tools use zstd level 1 and
encrypt (opsdb AES-256-GCM; pgBackRest aes-256-cbc, process-max=2). Needs root (the cluster and
pgBackRest run as the postgres OS user) and Debian's pgbackrest package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(os.environ.get("OPSDB_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
TICK = os.sysconf("SC_CLK_TCK")


def as_pg(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_cpu(postmaster: int) -> dict[int, float]:
    """CPU seconds of the postmaster and each of its children."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(entry) == postmaster or int(fields[1]) == postmaster:
            out[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def measure(name: str, argv: list[str], postmaster: int, env: dict[str, str] | None = None) -> None:
    before = children_cpu(postmaster)
    seen: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.update(children_cpu(postmaster))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    server = sum(cpu - before.get(pid, 0.0) for pid, cpu in seen.items())
    tree = usage.ru_utime + usage.ru_stime
    load = os.getloadavg()[0]
    print(
        f"{name:28s} wall {wall:6.2f} s  tool CPU {tree:5.2f} s  server CPU {server:5.2f} s  "
        f"total {tree + server:5.2f} s  exit {os.waitstatus_to_exitcode(status)}  load {load:.1f}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--opsdb", default=str(Path(sys.executable).with_name("opsdb")))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsdb-bench-cpu-"))
    os.chmod(work, 0o777)
    data, port = work / "data", free_port()
    subprocess.run(as_pg([str(BIN / "initdb"), "-k", "-D", str(data)]), check=True, capture_output=True)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"port = {port}\nunix_socket_directories = '{work}'\narchive_mode = on\n")
        conf.write(f"archive_command = 'pgbackrest --config={work}/pgbackrest.conf --stanza=bench archive-push %p'\n")
    subprocess.run(
        as_pg([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            as_pg(
                [str(BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), "-h", str(work), "-p", str(port), "postgres"]
            ),
            check=True,
            capture_output=True,
        )
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        conninfo = f"host={work} port={port} user=postgres"
        key = work / "repo.key"
        subprocess.run([args.opsdb, "key", "generate", str(key)], check=True, capture_output=True)
        config = work / "opsdb.toml"
        config.write_text(
            f'[repository]\nurl = "file://{work}/repo"\n[encryption]\nkey_file = "{key}"\n'
            '[compression]\nalgorithm = "zstd"\nlevel = 1\n'
            f'[clusters.bench]\nconninfo = "{conninfo}"\npg_bin_dir = "{BIN}"\nos_user = "postgres"\n'
        )
        pgbr = work / "pgbackrest.conf"
        pgbr.write_text(
            f"[global]\nrepo1-path={work}/pgbr\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=bench\n"
            "repo1-retention-full=99\ncompress-type=zst\ncompress-level=1\nprocess-max=2\nstart-fast=y\n"
            f"log-path={work}\nlock-path={work}\nspool-path={work}\n"
            f"[bench]\npg1-path={data}\npg1-port={port}\npg1-socket-path={work}\n"
        )
        (work / "pgbr").mkdir()
        shutil.chown(work / "pgbr", "postgres", "postgres")
        subprocess.run(
            as_pg(["pgbackrest", f"--config={pgbr}", "--stanza=bench", "stanza-create"]),
            check=True,
            capture_output=True,
        )
        size = subprocess.check_output(
            as_pg(
                [
                    str(BIN / "psql"),
                    "-h",
                    str(work),
                    "-p",
                    str(port),
                    "-Atc",
                    "SELECT sum(pg_database_size(oid)) FROM pg_database",
                    "postgres",
                ]
            )
        )
        print(f"pgbench scale {args.scale}: {int(size) / 1e9:.2f} GB, {args.rounds} interleaved rounds", flush=True)
        client = {**os.environ, "OPSDB_COMPRESSION__LOCATION": "client"}
        for _ in range(args.rounds):
            measure(
                "pgBackRest backup",
                as_pg(["pgbackrest", f"--config={pgbr}", "--stanza=bench", "--type=full", "backup"]),
                postmaster,
            )
            measure("opsdb backup (server zstd)", [args.opsdb, "--config", str(config), "backup"], postmaster)
            measure("opsdb backup (client zstd)", [args.opsdb, "--config", str(config), "backup"], postmaster, client)
    finally:
        subprocess.run(as_pg([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
