"""What proving the repository costs wal-fetch (repo/marker.py): the cluster marker is read before a
fetch can answer "not archived", once per process (the WAL agent and the prefetcher keep it; a miss
re-reads it when it is older than 5 s).

Usage: .venv/bin/python bench/marker_proof.py [rounds=50]
Per backend (file:// in a temp dir, S3 on a local moto server) it prints the median time of
  proof      marker.prove_archive (the one extra GET of a one-shot wal-fetch)
  one-shot   a fresh WalRepo per fetch: proof + fetch of one 16 MiB segment (in-process wal-fetch)
  warm       one WalRepo for every fetch: fetch only (the WAL agent / prefetcher)
"""

from __future__ import annotations

import os
import statistics
import struct
import sys
import tempfile
import time

from opsdb.ops.wal import push_fetch as ops_wal
from opsdb.repo import marker
from opsdb.repo.envelope import Codec
from opsdb.storage import open_storage
from opsdb.stream.crypto import EncryptionKey

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from storage_s3_roundtrip import moto_server

SEG = "000000010000000000000010"


def segment() -> bytes:
    header = struct.pack("<HHIQI4xQII", 0xD116, 2, 1, 0x10 * 16 * 2**20, 0, 7300000000000000001, 16 * 2**20, 8192)
    return header + os.urandom(2**20) * 16


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def measure(label: str, storage, rounds: int, workdir: str) -> None:
    key = EncryptionKey.from_secret(bytes(range(32)))
    codec, keys = Codec("zstd", 1, key=key), {key.id: key}
    src = os.path.join(workdir, SEG)
    with open(src, "wb") as fh:
        fh.write(segment())
    ops_wal.push_file(ops_wal.WalRepo(storage, "main", codec, keys), src)
    dest = os.path.join(workdir, "RECOVERYXLOG")
    warm_repo = ops_wal.WalRepo(storage, "main", codec, keys)
    proof = median_ms(lambda: marker.prove_archive(storage, "main"), rounds)
    one_shot = median_ms(lambda: ops_wal.fetch_file(ops_wal.WalRepo(storage, "main", codec, keys), SEG, dest), rounds)
    warm = median_ms(lambda: ops_wal.fetch_file(warm_repo, SEG, dest), rounds)
    print(
        f"{label:8} proof {proof:6.2f} ms   one-shot fetch {one_shot:7.2f} ms   warm fetch {warm:7.2f} ms   "
        f"(proof = {100 * proof / one_shot:.1f} % of a one-shot fetch)"
    )


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as tmp:
        measure("file://", open_storage(f"file://{tmp}/repo"), rounds, tmp)
    with moto_server() as url:
        import boto3

        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as tmp:
            measure("s3/moto", open_storage("s3://bench/repo", endpoint_url=url), rounds, tmp)


if __name__ == "__main__":
    main()
