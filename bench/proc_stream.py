"""Throughput and peak RSS of opsdb.proc: stream() reading a child's stdout, feed() writing its stdin.

Run: .venv/bin/python bench/proc_stream.py [GiB]   (default 2)
"""

from __future__ import annotations

import resource
import sys
import time

from opsdb.proc import Cmd, LocalRunner


def main() -> None:
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    total = int(gib * 1024**3)
    runner = LocalRunner()

    started = time.perf_counter()
    seen = 0
    with runner.stream(Cmd(("head", "-c", str(total), "/dev/zero"))) as out:
        for chunk in out.chunks():
            seen += len(chunk)
    elapsed = time.perf_counter() - started
    print(f"stream: {seen / 2**20:.0f} MiB in {elapsed:.2f} s = {seen / 2**20 / elapsed:.0f} MiB/s")

    chunk = b"\0" * 2**20
    count = total // len(chunk)
    started = time.perf_counter()
    result = runner.feed(Cmd(("wc", "-c")), (chunk for _ in range(count)))
    elapsed = time.perf_counter() - started
    assert int(result.text.strip()) == count * len(chunk)
    print(f"feed:   {count} MiB in {elapsed:.2f} s = {count / elapsed:.0f} MiB/s")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
