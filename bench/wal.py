"""Benchmark: WAL archiving through archive_command and PITR replay through restore_command.

    .venv/bin/python bench/wal.py [--segments 200] [--level 1] [--workers 4] [--prefetch 16] [--skip-replay]

One run, one machine, the same WAL bytes for every row (as in /work/shared/reference/peer-performance.md):

1. A throwaway cluster (initdb -k, archive_mode=on, archive_command='' so WAL piles up as .ready),
   a plain base backup, then `pgbench -i` at a scale that writes about --segments 16 MiB segments.
2. Drain of the .ready backlog by PostgreSQL's own archiver, per method: the .done files are renamed
   back to .ready, archive_command is set and reloaded, and the time until no burst segment is .ready
   any more is measured. Methods: `cp` + `sync` into a local directory; opsdb sync (through the WAL
   helper) into s3:// on a moto server on 127.0.0.1; opsdb async ([wal] async, push_workers: the
   helper pushes .ready files ahead) into s3:// on moto.
3. One cold `opsdb wal-push` call (a fresh process, median of 5) per mode: in-process (a spool_dir
   the helper cannot use: every call imports and connects itself), the first call (it starts the
   helper), calls served by the running helper, async calls for files the helper stored ahead.
4. PITR replay of the whole burst from the base backup (restore_command), wall time from start until
   the server left recovery: `cp` from the local directory; opsdb wal-fetch (through the helper);
   opsdb wal-fetch with [wal] prefetch.

opsdb runs as the `postgres` OS user (as PostgreSQL runs it), through the `opsdb` console script of
$OPSDB_BENCH_VENV (default /opt/opsdb-benchvenv), which that user must be able to run. Install it as
operators do, not editable (an editable install adds ~12 ms of import hooks to every call):
`python3 -m venv /opt/opsdb-benchvenv && /opt/opsdb-benchvenv/bin/pip install .` (again after changes).
Results: one JSON object on stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(os.environ.get("OPSDB_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
VENV = Path(os.environ.get("OPSDB_BENCH_VENV", "/opt/opsdb-benchvenv"))
PGPY = str(VENV / "bin" / "python")
LEAN = str(VENV / "bin" / "opsdb")  # what archive_command runs (SPEC)
SEG = 16 * 1024 * 1024


def log(msg: str) -> None:
    sys.stderr.write(f"[wal-bench] {msg}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_pg(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def chown(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


class Server:
    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        self.log = data.with_name(data.name + ".log")

    def pg_ctl(self, *args: str) -> None:
        sh(as_pg([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args]))

    def start(self) -> None:
        self.pg_ctl("-w", "-t", "600", "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k /tmp", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                as_pg([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]), capture_output=True
            )

    def sql(self, query: str) -> str:
        out = sh(as_pg([str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-XAtqc", query]))
        return out.stdout.strip()

    def client(self, tool: str, *args: str) -> str:
        """A client binary (pgbench, pg_basebackup) against this server, as postgres."""
        return sh(as_pg([str(BIN / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *args]))

    def basebackup(self, dest: Path) -> None:
        """A plain-format base backup with the WAL it needs (the start of a replay)."""
        self.client("pg_basebackup", "-D", str(dest), "-Fp", "-X", "fetch", "-c", "fast")

    def conf(self, text: str) -> None:
        with open(self.data / "postgresql.auto.conf", "a") as fh:
            fh.write(text + "\n")


def config(work: Path, name: str, endpoint: str, bucket: str, level: int, extra: str = "", prefix: str = "") -> Path:
    path = work / f"{name}.toml"
    path.write_text(
        f'[repository]\nurl = "s3://{bucket}/{prefix or name}"\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\n'
        f'[encryption]\nkey_file = "{work}/key"\nrequired = true\n'
        f'[compression]\nalgorithm = "zstd"\nlevel = {level}\n'
        '[clusters.main]\nconninfo = "host=127.0.0.1"\n'
        f'[wal]\nspool_dir = "{work}/spool-{name}"\n{extra}'
    )
    return path


def helper_cpu_seconds(spool: Path) -> float:
    """CPU seconds so far of the opsdb WAL helpers running under spool (pids in their .lock)."""
    total = 0.0
    for lock in spool.rglob("*.lock") if spool.is_dir() else []:
        try:
            total += cpu_seconds(int(lock.read_text().strip()))
        except (OSError, ValueError):
            continue  # no longer running
    return total


def cpu_seconds(pid: int) -> float:
    """user + sys CPU seconds of one process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def drain(server: Server, burst: list[str], command: str, timeout: float = 3600) -> float:
    """Re-archive the burst with `command`; seconds until none of it is .ready."""
    status = server.data / "pg_wal" / "archive_status"
    server.sql("ALTER SYSTEM SET archive_command = ''")
    server.sql("SELECT pg_reload_conf()")
    time.sleep(1.0)
    for name in burst:
        done = status / f"{name}.done"
        if done.exists():
            done.rename(status / f"{name}.ready")
    server.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
    start = time.monotonic()
    server.sql("SELECT pg_reload_conf()")
    names = set(burst)
    while time.monotonic() - start < timeout:
        ready = {p.name[:-6] for p in status.glob("*.ready")} & names
        if not ready:
            return time.monotonic() - start
        time.sleep(0.05)
    raise SystemExit(f"drain with {command!r} did not finish in {timeout}s")


def cold_call(argv: list[str], cwd: Path, runs: int = 5, prepare: Any = None) -> float:
    times = []
    for _ in range(runs):
        if prepare:
            prepare()
        start = time.monotonic()
        subprocess.run(as_pg(argv), cwd=cwd, check=True, capture_output=True)
        times.append(time.monotonic() - start)
    return statistics.median(times)


def replay(work: Path, base: Path, name: str, restore_command: str, port: int) -> float:
    """Restore the base backup copy, recover to the end of the archive, seconds until promoted."""
    data = work / f"replay-{name}"
    shutil.rmtree(data, ignore_errors=True)
    sh(as_pg(["cp", "-a", str(base), str(data)]))
    server = Server(data, port)
    with open(data / "postgresql.auto.conf", "a") as fh:
        fh.write(f"restore_command = '{restore_command}'\narchive_mode = off\nrecovery_target_timeline = 'current'\n")
    (data / "recovery.signal").touch()
    chown(data)
    start = time.monotonic()
    server.pg_ctl("-w", "-t", "3600", "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k /tmp", "start")
    while server.sql("SELECT pg_is_in_recovery()") != "f":
        time.sleep(0.1)
    wall = time.monotonic() - start
    server.stop()
    shutil.rmtree(data, ignore_errors=True)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=200)
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--prefetch", type=int, default=16)
    ap.add_argument("--skip-replay", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not (VENV / "bin" / "opsdb").exists():
        raise SystemExit(f"{VENV} has no opsdb: see this file's docstring")
    work = Path(tempfile.mkdtemp(prefix="opsdb-walbench-", dir="/tmp"))
    chown(work)
    results: dict[str, Any] = {"segments_requested": args.segments, "zstd_level": args.level}
    moto = None
    server = None
    try:
        # --- moto -------------------------------------------------------------------------------
        mport = free_port()
        endpoint = f"http://127.0.0.1:{mport}"
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
        moto = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(mport)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import boto3

        for _ in range(100):
            try:
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="walbench")
                break
            except Exception:
                time.sleep(0.2)
        # --- cluster, base backup, burst ----------------------------------------------------------
        sh([PGPY, "-c", f"from opsdb.stream.crypto import generate_key_file; generate_key_file('{work}/key')"])
        chown(work)
        data = work / "data"
        sh(as_pg([str(BIN / "initdb"), "-k", "-U", "postgres", "-D", str(data)]))
        server = Server(data, free_port())
        server.conf(
            "wal_level = replica\narchive_mode = on\narchive_command = ''\nmax_wal_size = '16GB'\n"
            "min_wal_size = '1GB'\nshared_buffers = '256MB'\nsynchronous_commit = off\nlc_messages = 'C'\n"
            "checkpoint_timeout = '30min'\nmax_wal_senders = 4"
        )
        server.start()
        base = work / "base"
        server.basebackup(base)
        first = server.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        scale = max(1, int(args.segments * SEG / 12_500_000))  # pgbench -i writes ~13 MB of WAL per scale unit
        log(f"pgbench -i -s {scale} (about {args.segments} segments of WAL)")
        t0 = time.monotonic()
        server.client("pgbench", "-i", "-s", str(scale), "-q", "postgres")
        results["pgbench_init_seconds"] = round(time.monotonic() - t0, 1)
        # a tiny logical message first: with nothing to switch, PostgreSQL 17+ name the still open segment
        last = server.sql(
            "SELECT pg_walfile_name(pg_switch_wal()) FROM (SELECT pg_logical_emit_message(false, 'bench', '')) AS m"
        )
        status = data / "pg_wal" / "archive_status"
        burst = sorted(
            p.name[:-6] for p in status.glob("*.ready") if len(p.name) == 30 and first <= p.name[:-6] <= last
        )
        results["segments"] = len(burst)
        results["burst"] = [burst[0], burst[-1]]
        log(f"burst: {len(burst)} segments {burst[0]} .. {burst[-1]}")
        # --- drains --------------------------------------------------------------------------------
        local = work / "archive-cp"
        local.mkdir()
        chown(local)
        sync_cfg = config(work, "sync", endpoint, "walbench", args.level)
        async_cfg = config(
            work, "async", endpoint, "walbench", args.level, f"async = true\npush_workers = {args.workers}\n"
        )
        chown(work)
        methods = {
            "cp+fsync": f"test ! -f {local}/%f && cp %p {local}/%f && sync {local}/%f",
            "opsdb sync (s3)": f"{LEAN} --config {sync_cfg} wal-push %p",
            "opsdb async (s3)": f"{LEAN} --config {async_cfg} wal-push %p",
        }
        drains = {}
        for name, command in methods.items():
            log(f"drain: {name}")
            spool = work / ("spool-async" if "async" in name else "spool-sync")
            moto_before, busy_before = cpu_seconds(moto.pid), machine_busy_seconds()
            helper_before = helper_cpu_seconds(spool)
            seconds = drain(server, burst, command)
            moto_cpu, busy = cpu_seconds(moto.pid) - moto_before, machine_busy_seconds() - busy_before
            helper_cpu = helper_cpu_seconds(spool) - helper_before  # the helpers outlive the drain (idle exit)
            drains[name] = {
                "seconds": round(seconds, 2),
                "segments_per_second": round(len(burst) / seconds, 2),
                "moto_cpu_seconds": round(moto_cpu, 1),
                "machine_busy_cpu_seconds": round(busy, 1),  # all processes, including moto and PostgreSQL
                "opsdb_helper_cpu_seconds": round(helper_cpu, 1),  # the WAL helper
            }
            log(
                f"  {seconds:.1f} s, {len(burst) / seconds:.1f} segments/s "
                f"(machine busy {busy:.1f} CPU s, of which moto {moto_cpu:.1f}, opsdb helper {helper_cpu:.1f})"
            )
        results["drain"] = drains
        # --- one cold call ---------------------------------------------------------------------------
        seg = data / "pg_wal" / burst[len(burst) // 2]
        probe = work / "probe"
        (probe / "pg_wal" / "archive_status").mkdir(parents=True)
        one = "0000000A0000000000000001"
        shutil.copy(seg, probe / "pg_wal" / one)
        file_cfg = work / "file.toml"
        file_cfg.write_text(
            sync_cfg.read_text().replace('url = "s3://walbench/sync"', f'url = "file://{work}/filerepo"')
        )
        chown(work)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

        def in_process(text: str) -> str:  # a spool_dir nobody can use: no helper, every call works alone
            return (
                "\n".join(
                    'spool_dir = "/dev/null/none"' if line.startswith("spool_dir") else line
                    for line in text.splitlines()
                )
                + "\n"
            )

        alone_cfg = work / "alone.toml"
        alone_cfg.write_text(in_process(sync_cfg.read_text()))
        alone_file_cfg = work / "alone-file.toml"
        alone_file_cfg.write_text(in_process(file_cfg.read_text()))
        first_cfg = work / "first.toml"
        chown(work)

        def push(cfg: Path, name: str = one) -> list[str]:
            return [LEAN, "--config", str(cfg), "wal-push", f"pg_wal/{name}"]

        def forget() -> None:
            s3.delete_object(Bucket="walbench", Key=f"sync/clusters/main/wal/{one[:16]}/{one}")

        def fresh_helper() -> None:  # a config file of its own each time: no helper serves it yet
            forget()
            first_cfg.write_text(sync_cfg.read_text() + f"# {time.monotonic()}\n")
            chown(first_cfg)

        calls = {
            "python -c pass (the interpreter)": cold_call([PGPY, "-c", "pass"], probe),
            "opsdb --version (Typer app)": cold_call([LEAN, "--version"], probe),
            "wal-push sync file://, in-process (no helper)": cold_call(
                push(alone_file_cfg), probe, prepare=lambda: shutil.rmtree(work / "filerepo", ignore_errors=True)
            ),
            "wal-push sync s3, in-process (no helper)": cold_call(push(alone_cfg), probe, prepare=forget),
            "wal-push sync s3, first call (starts the helper)": cold_call(push(first_cfg), probe, prepare=fresh_helper),
            "wal-push sync s3, helper running": cold_call(push(sync_cfg), probe, prepare=forget),
        }
        # async: the running helper stores .ready files ahead; the call then only confirms (from its memory)
        subprocess.run(as_pg(push(async_cfg)), cwd=probe, check=True, capture_output=True)  # starts the helper
        times = []
        for i in range(2, 7):
            name = f"0000000A00000000000000{i:02X}"
            shutil.copy(seg, probe / "pg_wal" / name)
            (probe / "pg_wal" / "archive_status" / f"{name}.ready").touch()
            chown(probe)
            subprocess.run(as_pg(push(async_cfg, one)), cwd=probe, check=True, capture_output=True)  # sees .ready
            key = f"async/clusters/main/wal/{name[:16]}/{name}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # stored ahead by the helper
                try:
                    s3.head_object(Bucket="walbench", Key=key)
                    break
                except Exception:
                    time.sleep(0.02)
            start = time.monotonic()
            subprocess.run(as_pg(push(async_cfg, name)), cwd=probe, check=True, capture_output=True)
            times.append(time.monotonic() - start)
        calls["wal-push async, stored ahead by the helper"] = statistics.median(times)
        results["cold_call_seconds"] = {k: round(v, 3) for k, v in calls.items()}
        for k, v in results["cold_call_seconds"].items():
            log(f"cold call {k}: {v * 1000:.0f} ms")
        server.stop()
        # --- replay --------------------------------------------------------------------------------
        if not args.skip_replay:
            extra = f"prefetch = {args.prefetch}\npush_workers = {args.workers}\n"
            prefetch_cfg = config(work, "prefetch", endpoint, "walbench", args.level, extra, prefix="async")
            chown(work)
            replays = {
                "cp from local dir": f"cp {local}/%f %p",
                "opsdb wal-fetch through the helper (s3)": f"{LEAN} --config {async_cfg} wal-fetch %f %p",
                f"opsdb wal-fetch prefetch={args.prefetch} (s3)": f"{LEAN} --config {prefetch_cfg} wal-fetch %f %p",
            }
            out = {}
            for name, command in replays.items():
                log(f"replay: {name}")
                seconds = replay(work, base, name.split()[0] + str(len(out)), command, free_port())
                out[name] = round(seconds, 1)
                log(f"  {seconds:.1f} s")
            results["replay_seconds"] = out
    finally:
        if server is not None:
            server.stop()
        for lock in work.rglob("*.lock"):
            try:
                os.kill(int(lock.read_text().strip() or 0), signal.SIGTERM)
            except (ValueError, ProcessLookupError, PermissionError, OSError):
                pass
        if moto is not None:  # moto_server ignores SIGTERM here: then SIGKILL
            os.killpg(moto.pid, signal.SIGTERM)
            try:
                moto.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(moto.pid, signal.SIGKILL)
                moto.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
