"""Benchmark: opsdb beside pgBackRest, in the same run, on the same data, over the same S3 endpoint.

    .venv/bin/python bench/peers.py [--scale 10] [--segments 32] [--rounds 2] [--kinds s3,posix]
                                    [--calls 5] [--prefetch 16] [--install] [--build-venv] [--wal-only]
                                    [--out FILE]

Needs root (PostgreSQL and both tools run as the `postgres` OS user), pgBackRest and haproxy from
Debian (`apt-get install -y pgbackrest haproxy`, or `--install`), and a regular install of this
checkout for that user (`--build-venv`, see bench/peer_setup.py, which also describes the TLS
endpoint and the repositories). One throwaway cluster (initdb -k, pgbench -i -s SCALE), then, for
each repository kind (s3: moto behind haproxy TLS; posix: a local directory, the pure-CPU
comparison), in interleaved rounds (the two tools back to back, order flipped each round):

  backup    full backup (both zstd-1 and encrypted; archive_command is the backing-up tool's own push
            into the same repository: pgBackRest's backup waits until its last segment is archived)
  restore   the newest backup into an empty directory, synced by both (pgBackRest always syncs;
            opsdb restore fsyncs every file by default)
  drain     PostgreSQL's archiver works off a burst of --segments WAL segments backlogged as .ready,
            sync and async (opsdb [wal] async; pgBackRest archive-async=y), each into a fresh
            repository; `cp` + `sync` into a local directory is the local reference
  call      one archive_command call on one segment: opsdb with its helper running, opsdb's first
            call after its helper went idle (stopped first; the call starts a new one), pgBackRest
            archive-push (no helper: every call is a first); one async call for a segment opsdb's
            helper already stored ahead; and `python -I -c pass`, the interpreter's floor of a call
  replay    PITR replay of the burst from a base backup taken just before it, until promoted:
            opsdb wal-fetch with [wal] prefetch, pgBackRest async archive-get with a queue of the
            same number of segments, `cp` from the local directory

Prints a table of same-run ratios (opsdb / pgBackRest per round, and their median) and writes
every sample with the command, load averages and versions as JSON (default bench/results/peers-*.json).
Timings on a shared machine are noisy: read the ratios of one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from peer_paths import TOOLS, backups, calls, config, drains, load, replays, restores
from peer_setup import Endpoint, Tools, need_tools, opsdb_venv, stop_helpers
from wal import BIN, SEG, Server, as_pg, chown, free_port, sh

RESULTS = Path(__file__).resolve().parent / "results"
HIGHER = {"MB/s": "higher", "segments/s": "higher", "ms": "lower"}
SHORT = {"MB/s": "MB/s", "segments/s": "seg/s", "ms": "ms"}


def log(msg: str) -> None:
    sys.stderr.write(f"[peers {time.strftime('%H:%M:%S')} load {load()}] {msg}\n")
    sys.stderr.flush()


def set_archive_command(server: Server, command: str) -> None:
    server.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
    server.sql("SELECT pg_reload_conf()")


def make_cluster(work: Path, scale: int) -> tuple[Server, int]:
    data = work / "data"
    sh(as_pg([str(BIN / "initdb"), "-k", "-U", "postgres", "-D", str(data)]))
    server = Server(data, free_port())
    server.conf(
        "wal_level = replica\narchive_mode = on\narchive_command = '/bin/true'\nmax_wal_size = '16GB'\n"
        "min_wal_size = '1GB'\nshared_buffers = '512MB'\nsynchronous_commit = off\nlc_messages = 'C'\n"
        "checkpoint_timeout = '30min'\nmax_wal_senders = 4"
    )
    server.start()
    server.client("pgbench", "-i", "-q", "-s", str(scale), "postgres")
    size = int(server.sql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
    return server, size


def make_burst(server: Server, work: Path, segments: int) -> tuple[Path, list[str]]:
    """A plain base backup, then about `segments` segments of WAL left .ready (archive_command '')."""
    set_archive_command(server, "")
    status = server.data / "pg_wal" / "archive_status"
    for _ in range(600):  # the backups' own segments finish archiving first
        if not list(status.glob("*.ready")):
            break
        time.sleep(0.1)
    base = work / "base"
    server.basebackup(base)
    first = server.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    server.sql("CREATE DATABASE burst")
    scale = max(1, int(segments * SEG / 12_500_000))  # pgbench -i writes ~13 MB of WAL per scale unit
    server.client("pgbench", "-i", "-q", "-s", str(scale), "burst")
    last = server.sql("SELECT pg_walfile_name(pg_switch_wal())")
    burst = sorted(p.name[:-6] for p in status.glob("*.ready") if len(p.name) == 30 and first <= p.name[:-6] <= last)
    return base, burst


def summarize(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (path, kind): each tool's median value and the opsdb/pgBackRest ratio of every round."""
    rows = []
    keys = sorted(
        {(s["path"], s["kind"]) for s in samples if s["tool"] in TOOLS}, key=lambda k: (_ORDER.index(k[0]), k[1])
    )
    for path, kind in keys:
        mine = [s for s in samples if s["path"] == path and s["kind"] == kind]
        by = {t: {s["round"]: s["value"] for s in mine if s["tool"] == t} for t in TOOLS}
        ratios = [round(by["opsdb"][r] / by["pgbackrest"][r], 3) for r in sorted(by["opsdb"]) if r in by["pgbackrest"]]
        unit = mine[0]["unit"]
        row = {
            "path": path,
            "kind": kind,
            "unit": unit,
            "better": HIGHER[unit],
            "opsdb": statistics.median(by["opsdb"].values()),
            "pgbackrest": statistics.median(by["pgbackrest"].values()),
            "ratio": round(statistics.median(ratios), 3),
            "round_ratios": ratios,
        }
        cp = [s for s in samples if s["path"] == path and s["tool"] == "cp" and s["kind"] in (kind, "local")]
        if cp:  # the local reference of the same rounds
            row["cp"] = statistics.median(s["value"] for s in cp)
            row["opsdb_over_cp"] = round(row["opsdb"] / row["cp"], 3)
        rows.append(row)
    return rows


_ORDER = ["backup", "restore", "drain-sync", "drain-async", "call", "call-first", "call-async", "call-floor", "replay"]
_LABEL = {
    "backup": "backup (full)",
    "restore": "restore (synced)",
    "drain-sync": "WAL drain, sync",
    "drain-async": "WAL drain, async",
    "call": "one archive call, helper running",
    "call-first": "one archive call, first (starts helper)",
    "call-async": "one async call, stored ahead",
    "call-floor": "python -I -c pass (a call's floor)",
    "replay": "PITR replay (prefetch / async get)",
}


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'path':<40} {'repo':<5} {'opsdb':>12} {'pgBackRest':>12} {'opsdb/pgBR':>10}  {'better':<6}  per round; local cp"
    out = [head]
    for r in rows:
        unit = SHORT[r["unit"]]
        extra = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
        if "cp" in r:
            extra += f"; cp {r['cp']:.3g} {unit}, opsdb/cp {r['opsdb_over_cp']:.2f}"
        out.append(
            f"{_LABEL[r['path']]:<40} {r['kind']:<5} {r['opsdb']:>6.4g} {unit:<5} {r['pgbackrest']:>6.4g} {unit:<5}"
            f" {r['ratio']:>10.2f}  {r['better']:<6}  {extra}"
        )
    return "\n".join(out)


def versions(opsdb: Path) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True)
        return (proc.stdout or proc.stderr).strip().splitlines()[0]

    import moto

    return {
        "opsdb": first_line([str(opsdb), "--version"]),
        "pgbackrest": first_line(["pgbackrest", "version"]),
        "postgres": first_line([str(BIN / "postgres"), "--version"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "moto": moto.__version__,
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale of the backed-up database (100 = 1.5 GB)")
    ap.add_argument("--segments", type=int, default=32, help="WAL burst size in 16 MiB segments (drains, replay)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kinds", default="s3,posix", help="repository kinds: s3 (moto behind TLS), posix")
    ap.add_argument("--calls", type=int, default=5, help="single archive calls per variant (medians)")
    ap.add_argument("--prefetch", type=int, default=16, help="segments fetched ahead by both tools in replay")
    ap.add_argument("--venv", default=os.environ.get("OPSDB_BENCH_VENV", "/opt/opsdb-peerbench-venv"))
    ap.add_argument("--build-venv", action="store_true", help="(re)install this checkout into --venv first")
    ap.add_argument("--install", action="store_true", help="apt-get install pgbackrest haproxy when missing")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--wal-only", action="store_true", help="skip backup and restore (the WAL paths only)")
    ap.add_argument("--out", help="JSON file (default bench/results/peers-DATE-scaleN.json)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if os.geteuid() != 0 or set(kinds) - {"s3", "posix"} or args.segments < args.calls + 1:
        raise SystemExit("run as root, --kinds from s3,posix, and --segments larger than --calls")
    need_tools(args.install)
    opsdb = opsdb_venv(Path(args.venv), args.build_venv)
    started, load_before, tool_versions = datetime.now(UTC), os.getloadavg(), versions(opsdb)
    out = Path(args.out) if args.out else RESULTS / f"peers-{started:%Y-%m-%d-%H%M}-scale{args.scale}.json"
    work = Path(tempfile.mkdtemp(prefix="opsdb-peerbench-", dir="/var/tmp"))
    chown(work)
    endpoint, server = Endpoint(work), None
    samples: list[dict[str, Any]] = []
    facts: dict[str, Any] = {
        "scale": args.scale,
        "database_bytes": None,
        "burst_segments": None,
        "rounds": args.rounds,
        "prefetch": args.prefetch,
        "compression": "zstd level 1 (both)",
        "encryption": "opsdb AES-256-GCM, pgBackRest aes-256-cbc",
        "pgbackrest": "process-max=2",
        "opsdb": "its defaults ([wal] push_workers etc.)",
    }

    def save(complete: bool) -> None:
        """After every phase, so a run stopped early keeps what it measured ("complete": false)."""
        doc = {
            "command": " ".join(["bench/peers.py", *sys.argv[1:]]),
            "complete": complete,
            "started": started.isoformat(timespec="seconds"),
            "seconds": round((datetime.now(UTC) - started).total_seconds()),
            "load_average_before": load_before,
            "load_average_now": os.getloadavg(),
            "versions": tool_versions,
            "tls": "s3 rows: HTTPS to haproxy (self-signed certificate, verified by both tools) in front of moto",
            "settings": facts,
            "summary": summarize(samples),
            "samples": samples,
        }
        out.write_text(json.dumps(doc, indent=1) + "\n")

    try:
        endpoint.start()
        log(f"endpoint {endpoint.url} (haproxy TLS -> moto); cluster: pgbench -i -s {args.scale}")
        server, size = make_cluster(work, args.scale)
        facts["database_bytes"] = size
        tools = Tools(work, endpoint, server.data, server.port, opsdb, BIN)
        main_cfg = {kind: {tool: config(tools, tool, f"main-{kind}", kind) for tool in TOOLS} for kind in kinds}
        for kind in kinds if not args.wal_only else []:
            log(f"backup and restore, {kind}, {args.rounds} rounds ({size / 1e6:.0f} MB)")
            samples += backups(tools, server, kind, args.rounds, size, main_cfg[kind])
            samples += restores(tools, kind, args.rounds, main_cfg[kind])
            save(False)
        base, burst = make_burst(server, work, args.segments)
        facts["burst_segments"] = len(burst)
        log(f"burst: {len(burst)} segments {burst[0]} .. {burst[-1]}")
        local = work / "archive-cp"
        for i, kind in enumerate(kinds):
            log(f"drains, {kind}")
            samples += drains(tools, server, burst, kind, args.rounds, local, with_cp=i == 0)
            log(f"single calls, {kind}")
            samples += calls(tools, server, [local / n for n in burst[: args.calls + 1]], kind, args.calls)
            save(False)
        server.stop()
        for kind in kinds:
            log(f"replay, {kind}")
            samples += replays(tools, base, burst, kind, args.rounds, local, args.rounds - 1, args.prefetch)
            save(False)
    finally:
        if server is not None:
            server.stop()
        stop_helpers(work)
        endpoint.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    save(True)
    print(
        f"\nopsdb vs pgBackRest, same run: pgbench scale {args.scale} ({size / 1e6:.0f} MB), burst of {len(burst)} "
        f"segments, {args.rounds} interleaved rounds; s3 = moto behind haproxy TLS (both verify the certificate); "
        f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    print(table(summarize(samples)))
    for s in samples:  # opsdb only (no pgBackRest counterpart in this probe)
        if s["tool"] == "opsdb-only":
            print(f"{_LABEL[s['path']]:<40} {s['kind']:<5} {s['value']:>6.4g} ms (opsdb; samples {s['samples_ms']})")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
