"""Throughput and peak RSS of LocalStorage.put/open for a large stream (temp file + fsync + rename).

Usage: .venv/bin/python bench/storage_local_roundtrip.py [GiB=1] [dir=/var/tmp]
"""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import tempfile
import time

from opsdb.storage.local import LocalStorage


def main() -> None:
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    parent = sys.argv[2] if len(sys.argv) > 2 else "/var/tmp"
    n = int(gib * 1024)
    block = os.urandom(2**20)
    with tempfile.TemporaryDirectory(dir=parent) as root:
        s = LocalStorage(root)
        t = time.monotonic()
        s.put("big", (block for _ in range(n)))
        up = time.monotonic() - t
        t = time.monotonic()
        sha = hashlib.sha256()
        with s.open("big") as f:
            while chunk := f.read(2**20):
                sha.update(chunk)
        down = time.monotonic() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"file:// {n} MiB: put {n / up:.0f} MiB/s (incl. fsync), open+sha256 {n / down:.0f} MiB/s, peak RSS {rss:.0f} MiB"
        )


if __name__ == "__main__":
    main()
