"""Probe: where a PITR replay's time goes, call by call, for opsdb, pgBackRest and `cp`.

    .venv/bin/python bench/replay_probe.py [--scale 5] [--segments 32] [--kind posix|s3] [--rounds 1]
                                           [--prefetch 16] [--tools cp,opsdb,pgbackrest] [--py-spy PATH]
                                           [--venv V] [--out FILE]

The stage of bench/peers.py (its cluster, burst, repositories and, for s3, the TLS endpoint), but only
the replay: each tool's async drain fills its repository once, then every round replays the burst
with each tool, its restore_command wrapped in /usr/bin/time (user and system CPU and wall of every
call; the wrapper's own fork is paid alike by every tool). Per replay it reports the wall time, the
time PostgreSQL spent waiting in restore_command (the sum of the calls) and the rest (redo, and
PostgreSQL's own fsync of every restored segment: KeepFileRestoredFromArchive), the calls' CPU, and
for opsdb where each call was served from (prefetch or the repository) and how long it waited for a
segment still being fetched ahead (its --json reply); the helper's CPU over the replay. With
--py-spy, opsdb's helper is recorded while it serves the replay (raw collapsed stacks, FILE.txt).
Needs root, like bench/peers.py. Figures on a shared machine are noisy: compare tools of one round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from peer_paths import TOOLS, config, load, order
from peer_setup import Endpoint, Tools, need_tools, opsdb_venv, stop_helpers
from peers import make_burst, make_cluster, set_archive_command
from wal import BIN, chown, cpu_seconds, drain, free_port, replay

RESULTS = Path(__file__).resolve().parent / "results"
TIME_FORMAT = "%%e %%U %%S"  # PostgreSQL turns %% into %; other escapes are its own


def log(msg: str) -> None:
    sys.stderr.write(f"[replay-probe {time.strftime('%H:%M:%S')} load {load()}] {msg}\n")
    sys.stderr.flush()


def timed(command: str, calls_log: Path, json_out: Path | None) -> str:
    """restore_command wrapped in /usr/bin/time (one line per call in calls_log); opsdb's --json reply
    appended to json_out (PostgreSQL passes %f and %p unquoted to sh, as in the bench's own commands)."""
    if json_out is not None:
        inner = command.replace(" wal-fetch ", " --json wal-fetch ").replace('"', '\\"') + f" >> {json_out}"
        return f'/usr/bin/time -a -o {calls_log} -f "{TIME_FORMAT}" sh -c "{inner}"'
    return f'/usr/bin/time -a -o {calls_log} -f "{TIME_FORMAT}" {command}'


def helper_pids(spool: Path) -> list[int]:
    pids = []
    for lock in spool.rglob("*.lock") if spool.is_dir() else []:
        try:
            pids.append(int(lock.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def record_helper(spool: Path, out: Path, spy: str, stop: threading.Event) -> None:
    """py-spy record of the first helper that appears under spool, until it exits or is stopped."""
    while not stop.is_set():
        pids = helper_pids(spool)
        if pids:
            proc = subprocess.Popen(
                [
                    spy,
                    "record",
                    "-p",
                    str(pids[0]),
                    "-o",
                    str(out),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stop.wait()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            return
        time.sleep(0.01)


def summarize_calls(calls_log: Path, json_out: Path | None) -> dict[str, Any]:
    rows = []
    for line in calls_log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:  # /usr/bin/time also writes "Command exited with non-zero status N"
            rows.append([float(p) for p in parts])
    walls = [r[0] * 1000 for r in rows]
    cpu = [(r[1] + r[2]) * 1000 for r in rows]
    out: dict[str, Any] = {
        "calls": len(rows),
        "calls_wall_s": round(sum(walls) / 1000, 2),
        "call_wall_ms_median": round(statistics.median(walls), 1) if walls else None,
        "call_wall_ms_max": round(max(walls), 1) if walls else None,
        "call_cpu_ms_median": round(statistics.median(cpu), 1) if cpu else None,
        "calls_cpu_s": round(sum(cpu) / 1000, 2),
    }
    if json_out is not None and json_out.exists():
        replies = [json.loads(line) for line in json_out.read_text().splitlines() if line.startswith("{")]
        out["sources"] = {
            s: sum(1 for r in replies if r.get("source") == s) for s in {r.get("source") for r in replies}
        }
        waits = [r["waited_ms"] for r in replies if r.get("waited_ms")]
        out["waited"] = {"calls": len(waits), "total_ms": round(sum(waits)), "max_ms": round(max(waits, default=0))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=5)
    ap.add_argument("--segments", type=int, default=32)
    ap.add_argument("--kind", default="posix", choices=("posix", "s3"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--prefetch", type=int, default=16)
    ap.add_argument("--tools", default="cp,opsdb,pgbackrest")
    ap.add_argument("--py-spy", dest="py_spy", help="py-spy binary: record opsdb's helper during its replays")
    ap.add_argument("--venv", default=os.environ.get("OPSDB_BENCH_VENV", "/opt/opsdb-peerbench-venv"))
    ap.add_argument("--build-venv", action="store_true")
    ap.add_argument("--out", help="JSON file (default bench/results/replay-probe-DATE-KIND.json)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (PostgreSQL and the tools run as postgres)")
    tools_wanted = [t for t in args.tools.split(",") if t]
    need_tools(False)
    opsdb = opsdb_venv(Path(args.venv), args.build_venv)
    started = datetime.now(UTC)
    out = Path(args.out) if args.out else RESULTS / f"replay-probe-{started:%Y-%m-%d-%H%M}-{args.kind}.json"
    work = Path(tempfile.mkdtemp(prefix="opsdb-replayprobe-", dir="/var/tmp"))
    chown(work)
    endpoint, server = Endpoint(work), None
    results: list[dict[str, Any]] = []
    try:
        if args.kind == "s3":
            endpoint.start()
        server, _ = make_cluster(work, args.scale)
        tools = Tools(work, endpoint, server.data, server.port, opsdb, BIN)
        base, burst = make_burst(server, work, args.segments)
        log(f"burst: {len(burst)} segments")
        local = work / "archive-cp"
        local.mkdir()
        chown(local)
        drain(server, burst, f"test ! -f {local}/%f && cp %p {local}/%f")
        for tool in TOOLS:
            extra = {"wal": "async = true\n"} if tool == "opsdb" else {"extra": "archive-async=y\n"}
            drain(server, burst, tools.push(tool, config(tools, tool, "probe-fill", args.kind, **extra)))
        set_archive_command(server, "/bin/true")
        server.stop()
        queue = f"archive-async=y\narchive-get-queue-max={args.prefetch * 16}MiB\n"
        for r in range(args.rounds):
            for tool in [t for t in ("cp", *order(r)) if t in tools_wanted]:  # as bench/peers.py: cp, then flipped
                name = f"{tool}-r{r}"
                data = work / f"replay-{name}"
                spool = work / f"spool-opsdb-o-probe-replay-{r}"
                if tool == "cp":
                    command = f"cp {local}/%f %p"
                else:
                    extra = {"wal": f"prefetch = {args.prefetch}\n"} if tool == "opsdb" else {"extra": queue}
                    cfg = config(tools, tool, f"probe-replay-{r}", args.kind, repo_name="probe-fill", **extra)
                    command = tools.fetch(tool, cfg, data)
                calls_log, json_out = (
                    work / f"calls-{name}.log",
                    (work / f"replies-{name}.jsonl" if tool == "opsdb" else None),
                )
                for f in (calls_log, json_out):
                    if f is not None:
                        f.touch()
                        chown(f)
                stop = threading.Event()
                spy = None
                if tool == "opsdb" and args.py_spy:
                    target = out.with_name(f"{out.stem}-{name}.txt")
                    spy = threading.Thread(target=record_helper, args=(spool, target, args.py_spy, stop))
                    spy.start()
                log(f"replay {name}")
                seconds = replay(work, base, name, timed(command, calls_log, json_out), free_port())
                helper_cpu = sum(cpu_seconds(p) for p in helper_pids(spool) if Path(f"/proc/{p}").exists())
                stop.set()
                if spy is not None:
                    spy.join()
                stop_helpers(work)
                row = {
                    "tool": tool,
                    "round": r,
                    "wall_s": round(seconds, 2),
                    "segments_per_s": round(len(burst) / seconds, 2),
                    **summarize_calls(calls_log, json_out),
                }
                row["postgres_own_s"] = round(seconds - row["calls_wall_s"], 2)
                if tool == "opsdb":
                    row["helper_cpu_s"] = round(helper_cpu, 2)
                log(json.dumps(row))
                results.append(row)
    finally:
        if server is not None:
            server.stop()
        stop_helpers(work)
        if args.kind == "s3":
            endpoint.stop()
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "command": " ".join(["bench/replay_probe.py", *sys.argv[1:]]),
        "started": started.isoformat(timespec="seconds"),
        "load_average_after": os.getloadavg(),
        "burst_segments": len(burst),
        "replays": results,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
