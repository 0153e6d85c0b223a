"""Measure a restore drill's phases on a pgbench database (default scale 50, about 750 MB).

    .venv/bin/python -m bench.drill_pgbench [--scale 50] [--seconds 20]

Builds a primary (initdb, archive via cp then pushed into an encrypted zstd file:// repository),
pgbench -i, a streamed base backup, pgbench traffic with a heartbeat every 2 s, then one drill to
a time in the middle of the traffic. Prints the drill's phases, RTO, RPO and bytes read.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from opsdb.ops.proof.drill import DrillRequest, run_drill
from opsdb.ops.proof.drill_restore import RepositoryRestorer
from opsdb.ops.proof.drill_run import load_catalog
from opsdb.ops.proof.scratch import LocalScratch
from opsdb.pg.tools import find_bin_dir
from opsdb.proc import Cmd, LocalRunner
from opsdb.storage.local import LocalStorage
from tests.fixtures.pg import ClusterFactory
from tests.integration.drill_env import KEYS, make_primary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    bin_dir = find_bin_dir(None)
    factory = ClusterFactory(bin_dir)
    repo_dir = Path(tempfile.mkdtemp(prefix="opsdb-bench-repo-"))
    runner = LocalRunner()
    try:
        storage = LocalStorage(repo_dir)
        primary = make_primary(factory, [storage])
        t = time.monotonic()
        pgbench = primary.instance.tools.path("pgbench")
        runner.run(
            Cmd((pgbench, "-i", "-s", str(args.scale), "-q", primary.conninfo), timeout=3600), doing="pgbench -i"
        )
        print(f"pgbench -i -s {args.scale}: {time.monotonic() - t:.1f} s", file=sys.stderr)
        primary.switch_and_push()
        t = time.monotonic()
        backup = primary.backup()
        print(
            f"backup: {backup.size_bytes / 1e6:.0f} MB plain, {backup.stored_bytes / 1e6:.0f} MB stored, "
            f"{time.monotonic() - t:.1f} s",
            file=sys.stderr,
        )
        primary.switch_and_push()
        beats = []
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(2.0):
                beats.append(primary.heartbeat())

        thread = threading.Thread(target=beat)
        thread.start()
        runner.run(
            Cmd((pgbench, "-T", str(args.seconds), "-c", "4", "-j", "2", "-n", primary.conninfo), timeout=3600),
            doing="pgbench traffic",
        )
        stop.set()
        thread.join()
        primary.switch_and_push()
        mid = len(beats) // 2
        target = beats[mid].time + (beats[mid + 1].time - beats[mid].time) / 2
        restorer = RepositoryRestorer(storage, "main", KEYS, lambda: load_catalog(storage, "main", KEYS), "postgres")
        request = DrillRequest(
            cluster="main",
            target_kind="time",
            to_time=target,
            primary_conninfo=primary.conninfo,
            os_user="postgres",
            timeout=3600,
        )
        report = run_drill(
            request,
            storage=storage,
            keys=KEYS,
            restorer=restorer,
            scratch=LocalScratch(bin_dir, "postgres", runner),
            bin_dir=bin_dir,
            runner=runner,
        )
        print(f"drill {report.result}: target {target.isoformat()}, reached {report.recovered_time}")
        for name, secs in report.phases.items():
            print(f"  {name:<14} {secs:8.2f} s")
        print(f"  {'RTO':<14} {report.rto_seconds:8.2f} s")
        print(f"  RPO {report.rpo_seconds:.3f} s; bytes read {report.bytes_read / 1e6:.0f} MB; WAL {report.wal}")
        for c in report.checks:
            print(f"  {c.status:<4} {c.name}: {c.detail[:140]}")
    finally:
        factory.close()
        shutil.rmtree(repo_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
