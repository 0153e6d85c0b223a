"""What the guarded create-only fallback costs per object, against a local moto server.

Usage: .venv/bin/python bench/storage_s3_create_only.py [objects=40] [size_KiB=16384] [rounds=3]
Writes `objects` create-only objects of `size_KiB` (a WAL segment is 16384) per mode, interleaving
the modes over `rounds` rounds: "native" (the store is known to refuse: one PutObject) and "guarded"
(no probe result: multipart upload, a check before Complete, a read-back after). Prints the median
milliseconds per object per mode and the requests each mode sent.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from collections import Counter

import boto3
from storage_s3_roundtrip import start_moto  # bench/ is on sys.path when run as a script

from opsdb.storage.createonly import REFUSED, CreateOnlyProbe
from opsdb.storage.s3 import S3Storage


def run(storage: S3Storage, objects: int, data: bytes) -> float:
    started = time.perf_counter()
    for _ in range(objects):
        storage.put(f"wal/{uuid.uuid4().hex}", [data], if_absent=True)
    return (time.perf_counter() - started) * 1000 / objects


def main() -> None:
    objects = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    size = (int(sys.argv[2]) if len(sys.argv) > 2 else 16384) * 1024
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    server, url = start_moto()
    try:
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="bench")
        data = os.urandom(size)
        modes: dict[str, S3Storage] = {}
        requests: dict[str, Counter[str]] = {}
        for mode in ("native", "guarded"):
            storage = S3Storage("bench", f"repo-{mode}", endpoint_url=url)
            storage.create_only = CreateOnlyProbe(REFUSED, REFUSED) if mode == "native" else None
            counts: Counter[str] = Counter()
            storage.client.meta.events.register(
                "before-call.s3", lambda model, counts=counts, **_: counts.update([model.name])
            )
            modes[mode], requests[mode] = storage, counts
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(rounds):
            for mode, storage in modes.items():
                times[mode].append(run(storage, objects, data))
        for mode in modes:
            per_object = {k: v / (objects * rounds) for k, v in sorted(requests[mode].items())}
            print(
                f"{mode:8} {statistics.median(times[mode]):7.1f} ms/object (rounds: "
                + ", ".join(f"{t:.1f}" for t in times[mode])
                + f")  requests/object: {per_object}"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
