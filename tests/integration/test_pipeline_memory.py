"""Peak memory does not grow with the stream: 1 GiB through zstd + AES-256-GCM + S3 multipart upload
to the moto server and back, in a child process whose own peak RSS must stay under 80 MB.

The child runs the pipeline and nothing else (no pytest, no fixtures in its address space), so
its peak RSS is the pipeline's: Python, boto3 and its service models, zstd and AES contexts, and the
S3 driver's part buffers (16 MiB parts, one upload in flight).

The peak is VmHWM from /proc/self/status: the high-water mark of the child's own address space.
ru_maxrss is not usable here, because Linux carries the pre-exec RSS over exec, so a child of
a big pytest process would report pytest's size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

GIB = 1024**3
RSS_LIMIT_MB = 80

CHILD = textwrap.dedent(
    """
    import hashlib, json, os, sys
    from opsdb.repo.envelope import Codec, get_object, put_object
    from opsdb.storage import open_storage
    from opsdb.stream.crypto import EncryptionKey
    from opsdb.stream.stages import CHUNK_SIZE

    url, endpoint, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    table = bytes(97 + b % 16 for b in range(256))  # 4 bits of entropy per byte
    rows = b"".join(b"%08d|2024-05-01 12:00:%02d|customer-%05d|active|%6d.%02d\\n" % (i, i % 60, i % 9973, i * 7, i % 100)
                    for i in range(CHUNK_SIZE // 64))[: CHUNK_SIZE // 2]

    def peak_kb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    def generate():  # moderately compressible, made on the fly: never more than one chunk exists
        for _ in range(total // CHUNK_SIZE):
            yield os.urandom(CHUNK_SIZE // 2).translate(table) + rows

    key = EncryptionKey.from_secret(os.urandom(32))
    storage = open_storage(url, endpoint_url=endpoint, part_size=16 * 2**20, upload_concurrency=1)
    name = "clusters/memtest/backups/b1/base.tar"
    stored = put_object(storage, name, generate(), Codec(compression="zstd", level=3, key=key))
    after_put = peak_kb()
    sha, size = hashlib.sha256(), 0
    for piece in get_object(storage, name, {key.id: key}):
        sha.update(piece)
        size += len(piece)
    storage.delete([name])
    print(json.dumps({
        "size": stored.size, "stored_size": stored.stored_size, "sha256": stored.sha256, "stages": stored.stages,
        "read_size": size, "read_sha256": sha.hexdigest(),
        "peak_kb_after_put": after_put, "peak_kb": peak_kb(),
    }))
    """
)


def test_one_gib_round_trip_through_s3_in_bounded_memory(moto_endpoint: str, s3_url: str) -> None:
    url = f"{s3_url}/{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, moto_endpoint, str(GIB)],
        capture_output=True,
        text=True,
        timeout=540,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["size"] == GIB and result["read_size"] == GIB
    assert result["read_sha256"] == result["sha256"]
    assert result["stages"] == ["zstd", "aes256gcm"]
    assert result["stored_size"] < GIB  # it was compressed (and the moto server really got parts)
    peak_mb = result["peak_kb"] / 1024
    assert peak_mb < RSS_LIMIT_MB, (
        f"peak RSS {peak_mb:.1f} MB (after upload {result['peak_kb_after_put'] / 1024:.1f} MB)"
    )
