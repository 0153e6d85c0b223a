"""Peak RSS and throughput of S3Storage.put/open for a large stream against a local moto server.

Usage: .venv/bin/python bench/storage_s3_roundtrip.py [GiB=1] [part_size_MiB=16] [upload_concurrency=2]
Prints one line per direction. Data is a 1 MiB random block repeated (the cost measured is storage's).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import boto3

from opsdb.storage import open_storage


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server on a free port of 127.0.0.1 (dummy credentials set), once it answers; and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ[k] = v
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/moto-api/data.json", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return server, url


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """start_moto() for the length of a with-block (bench/marker_proof.py); yields its URL."""
    server, url = start_moto()
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    part_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    conc = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    server, url = start_moto()
    try:
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="bench")
        storage = open_storage("s3://bench/repo", endpoint_url=url, part_size=part_mib * 2**20, upload_concurrency=conc)
        block = os.urandom(2**20)
        n = int(gib * 1024)
        base = rss_mib()
        sha = hashlib.sha256()

        def source():
            for _ in range(n):
                sha.update(block)
                yield block

        t = time.monotonic()
        storage.put("big", source())
        up = time.monotonic() - t
        print(
            f"put  {n} MiB part={part_mib}MiB conc={conc}: {n / up:.0f} MiB/s, peak RSS {rss_mib():.0f} MiB (before {base:.0f})"
        )
        t = time.monotonic()
        got = hashlib.sha256()
        with storage.open("big") as f:
            while chunk := f.read(2**20):
                got.update(chunk)
        down = time.monotonic() - t
        assert got.digest() == sha.digest()
        print(f"open {n} MiB: {n / down:.0f} MiB/s, peak RSS {rss_mib():.0f} MiB")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
