"""Probe: the WAL helper's client-side CPU per call, and the running helper's resident memory.

    .venv/bin/python bench/wal_helper_probe.py cpu [--opsdb PATH] [--calls 40]
    .venv/bin/python bench/wal_helper_probe.py rss [--opsdb PATH]
    .venv/bin/python bench/wal_helper_probe.py push [--opsdb PATH] [--calls 6]

cpu: a file:// repository, `--calls` segments pushed, then `--calls` wal-fetch calls and `--calls`
     wal-push calls of stored files, all served by the running helper; CPU (user + sys, getrusage of
     the children) per call, less `python -c pass` of the same interpreter: what opsdb's side of a
     call costs beyond the interpreter's own start. Use a regular install (`--opsdb`, e.g. the one
     bench/peers.py --build-venv makes): an editable install adds import hooks to every start.
rss: 12 segments of 16 MiB pushed and fetched (prefetch = 4) through the helper, file:// and S3
     (moto_server on 127.0.0.1, plain HTTP), then VmRSS / VmHWM of the helper from /proc.
push: the CPU of one wal-push of a new 16 MiB segment (pgbench WAL from bench/peers.py's burst when
     --segments DIR holds some, else a synthetic one), file://: the call's process (getrusage) and
     the helper (/proc/PID/stat) with the helper running, and the first call after the helper went
     idle (stopped first, as its idle exit stops it) until it was answered; `python -I -c pass` beside.
Runs as the current user (the helper serves only its own uid). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opsdb.ops.wal.spool import stop_helpers  # noqa: E402
from opsdb.stream.crypto import generate_key_file  # noqa: E402
from tests.fakes import wal_segment  # noqa: E402


def write_config(work: Path, name: str, url: str, prefetch: int) -> Path:
    path = work / f"{name}.toml"
    path.write_text(
        f'[repository]\n{url}\n[encryption]\nkey_file = "{work}/key"\nrequired = true\n[compression]\nlevel = 1\n'
        f'[clusters.main]\nconninfo = "host=127.0.0.1"\nos_user = "{os.environ.get("USER", "root")}"\n'
        f'[wal]\nspool_dir = "{work}/spool-{name}"\nprefetch = {prefetch}\n'
    )
    return path


def children_cpu_ms(argvs: list[list[str]], cwd: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for argv in argvs:
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / len(argvs) * 1000


def cpu(work: Path, opsdb: str, calls: int) -> None:
    pgdata = work / "pgdata"
    (pgdata / "pg_wal" / "archive_status").mkdir(parents=True)
    cfg = write_config(work, "cpu", f'url = "file://{work}/repo"', prefetch=4)
    names = [f"00000001000000000000{n:04X}" for n in range(1, calls + 1)]
    for name in names:
        (pgdata / "pg_wal" / name).write_bytes(wal_segment(name, size=1 << 20))
        subprocess.run([opsdb, "--config", str(cfg), "wal-push", f"pg_wal/{name}"], cwd=pgdata, check=True)
    python = str(Path(opsdb).with_name("python"))
    base = children_cpu_ms([[python, "-c", "pass"]] * calls, pgdata)
    fetch = children_cpu_ms(
        [[opsdb, "--config", str(cfg), "wal-fetch", n, "pg_wal/RECOVERYXLOG"] for n in names], pgdata
    )
    push = children_cpu_ms([[opsdb, "--config", str(cfg), "wal-push", f"pg_wal/{n}"] for n in names], pgdata)
    print(f"load average {os.getloadavg()[0]:.1f}; python -c pass: {base:.1f} ms CPU")
    print(f"wal-fetch served by the helper: {fetch:.1f} ms CPU, opsdb's side {fetch - base:.1f} ms")
    print(f"wal-push of a stored file, served by the helper: {push:.1f} ms CPU, opsdb's side {push - base:.1f} ms")
    stop_helpers(str(work / "spool-cpu"))


def rss(work: Path, opsdb: str) -> None:
    pgdata = work / "pgdata"
    (pgdata / "pg_wal" / "archive_status").mkdir(parents=True)
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 13)]
    for name in names:
        (pgdata / "pg_wal" / name).write_bytes(wal_segment(name, size=16 << 20))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto_server = Path(sys.executable).with_name("moto_server")
    moto = subprocess.Popen(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.environ.update(AWS_ACCESS_KEY_ID="probe", AWS_SECRET_ACCESS_KEY="probe", AWS_DEFAULT_REGION="us-east-1")
    try:
        import boto3

        for _ in range(100):  # bounded: moto takes a moment to listen
            try:
                boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="walprobe")
                break
            except Exception:  # not listening yet
                time.sleep(0.1)
        repos = {
            "file": f'url = "file://{work}/repo"',
            "s3": f'url = "s3://walprobe/r"\nendpoint_url = "http://127.0.0.1:{port}"\nregion = "us-east-1"',
        }
        for kind, url in repos.items():
            cfg = write_config(work, kind, url, prefetch=4)
            for name in names:
                subprocess.run([opsdb, "--config", str(cfg), "wal-push", f"pg_wal/{name}"], cwd=pgdata, check=True)
            restore = work / f"restore-{kind}"
            (restore / "pg_wal").mkdir(parents=True)
            for name in names:
                argv = [opsdb, "--config", str(cfg), "wal-fetch", name, "pg_wal/RECOVERYXLOG"]
                subprocess.run(argv, cwd=restore, check=True)
            for lock in (work / f"spool-{kind}").rglob("helper/*.lock"):
                status = Path(f"/proc/{lock.read_text().strip()}/status").read_text().splitlines()
                vm = dict(line.split(":", 1) for line in status if line.startswith("Vm"))
                print(f"{kind} helper: VmRSS {vm['VmRSS'].strip()}, peak VmHWM {vm['VmHWM'].strip()}")
            stop_helpers(str(work / f"spool-{kind}"))
    finally:
        os.killpg(moto.pid, signal.SIGKILL)
        moto.wait(timeout=10)


def push(work: Path, opsdb: str, calls: int, segments: Path | None) -> None:
    import fcntl
    import statistics

    pgdata = work / "pgdata"
    (pgdata / "pg_wal").mkdir(parents=True)
    names = [f"0000000100000000000000{n:02X}" for n in range(1, calls + 2)]
    real = sorted(segments.iterdir()) if segments else []
    for i, name in enumerate(names):  # a real segment's bytes under each name: only zstd's work matters here
        data = real[i % len(real)].read_bytes() if real else wal_segment(name, size=16 << 20)
        (pgdata / "pg_wal" / name).write_bytes(data)
    configs = {
        kind: write_config(work, kind, f'url = "file://{work}/repo-{kind}"', prefetch=0) for kind in ("warm", "cold")
    }
    tick = 1000 / os.sysconf("SC_CLK_TCK")

    def helper(kind: str) -> int:
        return int(next((work / f"spool-{kind}").rglob("helper/*.lock")).read_text())

    def helper_ms(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * tick

    def stop(kind: str) -> None:
        for lock in (work / f"spool-{kind}").rglob("helper/*.lock"):
            fd = os.open(lock, os.O_RDWR)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    continue  # no helper
                except BlockingIOError:
                    os.kill(int(lock.read_text()), signal.SIGTERM)
                fcntl.flock(fd, fcntl.LOCK_EX)  # until it is gone
            finally:
                os.close(fd)

    def call(kind: str, name: str) -> float:
        return children_cpu_ms([[opsdb, "--config", str(configs[kind]), "wal-push", f"pg_wal/{name}"]], pgdata)

    for kind in configs:  # untimed: each config validated once, its helper started
        call(kind, names[-1])
    rows: dict[str, list[tuple[float, float]]] = {"running": [], "first": [], "floor": []}
    python = str(Path(opsdb).with_name("python3"))
    for name in names[:calls]:
        pid = helper("warm")
        before = helper_ms(pid)
        rows["running"].append((call("warm", name), helper_ms(pid) - before))
        stop("cold")
        rows["first"].append((call("cold", name), 0.0))
        rows["first"][-1] = (rows["first"][-1][0], helper_ms(helper("cold")))
        rows["floor"].append((children_cpu_ms([[python, "-I", "-c", "pass"]], pgdata), 0.0))
    print(f"load average {os.getloadavg()[0]:.1f}; CPU per call, median of {calls} (call's process + helper):")
    for what, values in rows.items():
        mine, helper_part = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        print(f"{what:<8} {mine:6.1f} + {helper_part:6.1f} ms; totals {[round(a + b) for a, b in values]}")
    stop("warm")
    stop("cold")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=("cpu", "rss", "push"))
    ap.add_argument("--segments", type=Path, help="push: a directory of real WAL segments to push")
    ap.add_argument("--opsdb", default=str(Path(sys.executable).with_name("opsdb")))
    ap.add_argument("--calls", type=int, default=40)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsdb-walprobe-"))
    try:
        generate_key_file(work / "key")
        if args.probe == "cpu":
            cpu(work, args.opsdb, args.calls)
        elif args.probe == "rss":
            rss(work, args.opsdb)
        else:
            push(work, args.opsdb, args.calls, args.segments)
    finally:
        stop_helpers(str(work))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
