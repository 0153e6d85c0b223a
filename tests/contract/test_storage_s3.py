"""S3 behaviour tested on the moto server only: part sizes, Object Lock, checksums, memory and failure
paths (what also runs on s3rver is in test_storage_s3_stores.py)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from opsdb.errors import NotFound, RepositoryUnavailable, UsageError
from opsdb.storage import open_storage
from opsdb.storage.createonly import REFUSED, probe_create_only
from opsdb.storage.s3 import S3Storage
from tests.contract.s3_helpers import PART, MiB, chunks_of, read_all
from tests.fixtures.s3 import S3Server


@pytest.fixture
def s3(moto_server: S3Server, s3_url: str) -> S3Storage:
    return moto_server.storage(f"{s3_url}/{uuid.uuid4().hex[:8]}", part_size=PART, max_attempts=2)


def test_part_size_grows_as_parts_accumulate(s3: S3Storage, s3_client: Any) -> None:
    s3.parts_per_step = 2  # 5, 5, 10, 10, 20 MiB ...
    data = os.urandom(10 * PART + 123)  # parts of 5, 5, 10, 10, 20 MiB, then 123 bytes
    s3.put("grow.bin", chunks_of(data, 4 * MiB))
    sizes = []
    for n in range(1, 7):
        sizes.append(s3_client.head_object(Bucket=s3.bucket, Key=f"{s3._base}grow.bin", PartNumber=n)["ContentLength"])
    assert sizes == [PART, PART, 2 * PART, 2 * PART, 4 * PART, 123]
    assert read_all(s3, "grow.bin") == data


def test_object_lock_governance(moto_server: S3Server, s3_lock_bucket: str, s3_client: Any) -> None:
    s3 = moto_server.storage(f"s3://{s3_lock_bucket}/repo", part_size=PART, object_lock_days=7)
    probe = probe_create_only(s3)  # its uploads carry checksums, as locked buckets want
    assert (probe.put, probe.multipart) == (REFUSED, REFUSED)
    s3.put("catalog/1.json", [b"{}"], if_absent=True)
    head = s3_client.head_object(Bucket=s3_lock_bucket, Key="repo/catalog/1.json")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    days = (head["ObjectLockRetainUntilDate"].timestamp() - time.time()) / 86400
    assert 6.9 < days <= 7.0
    data = os.urandom(2 * PART + 5)
    s3.put("backups/1/base.tar", chunks_of(data))  # multipart with lock headers and part checksums
    assert read_all(s3, "backups/1/base.tar") == data
    # the locked version cannot be removed without a governance bypass
    version = head["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        s3_client.delete_object(Bucket=s3_lock_bucket, Key="repo/catalog/1.json", VersionId=version)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is


def test_unreachable_endpoint_is_repository_unavailable(moto_endpoint: str) -> None:
    s3 = open_storage("s3://nowhere/repo", endpoint_url=f"http://127.0.0.1:{_closed_port()}", max_attempts=1)
    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable, match=r"unable to put s3://nowhere/repo/k: Could not connect"):
        s3.put("k", [b"x"])
    with pytest.raises(RepositoryUnavailable, match="unable to stat"):
        s3.stat("k")
    with pytest.raises(RepositoryUnavailable, match="unable to list"):
        list(s3.list(""))
    with pytest.raises(RepositoryUnavailable, match="unable to open"):
        s3.open("k")
    with pytest.raises(RepositoryUnavailable, match="unable to delete"):
        s3.delete(["k"])
    assert time.monotonic() - started < 30  # no long hang: retries are bounded by max_attempts


def test_missing_bucket(moto_endpoint: str) -> None:
    s3 = open_storage("s3://no-such-bucket-opsdb/repo", endpoint_url=moto_endpoint, max_attempts=1)
    with pytest.raises(RepositoryUnavailable, match="bucket 'no-such-bucket-opsdb' does not exist"):
        s3.put("k", [b"x"])
    with pytest.raises(RepositoryUnavailable, match="does not exist"):
        list(s3.list(""))
    with pytest.raises((NotFound, RepositoryUnavailable)):
        s3.open("k")


@pytest.mark.parametrize(
    "options",
    [{"part_size": MiB}, {"part_size": 6 * 2**30}, {"checksum_mode": "always"}, {"max_attempts": 0}],
)
def test_bad_options_are_usage_errors(moto_endpoint: str, options: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        open_storage("s3://bucket/repo", endpoint_url=moto_endpoint, **options)


RSS_PROBE = """
import os, resource, sys
from opsdb.storage import open_storage
s = open_storage(sys.argv[1], endpoint_url=sys.argv[2], part_size=32 * 2**20, upload_concurrency=2)
block = os.urandom(2**20)
s.list("")  # warm up the client before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s.put("rss.bin", (block for _ in range(128)))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_put_memory_does_not_scale_with_part_size(moto_endpoint: str, s3_url: str) -> None:
    """128 MiB in 32 MiB parts, two in flight: buffering parts in RAM would cost >= 64 MiB;
    spooled parts keep the growth of peak RSS small. Measured in a fresh process (ru_maxrss is a peak)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, f"{s3_url}/rss-{uuid.uuid4().hex[:6]}", moto_endpoint],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    grew_mib = int(out.stdout.strip())
    print(f"peak RSS growth: {grew_mib} MiB")
    assert grew_mib < 24, f"peak RSS grew by {grew_mib} MiB during a 128 MiB put"


@pytest.mark.parametrize("size", [10, 2 * MiB, 2 * PART + 1], ids=["tiny", "2MiB", "multipart"])
def test_when_supported_checksums_round_trip(moto_endpoint: str, s3_url: str, size: int) -> None:
    """AWS-style default checksums (aws-chunked trailers) must not end up inside the stored bytes."""
    s3 = open_storage(
        f"{s3_url}/{uuid.uuid4().hex[:8]}", endpoint_url=moto_endpoint, part_size=PART, checksum_mode="when_supported"
    )
    data = os.urandom(size)
    s3.put("k", chunks_of(data))
    assert read_all(s3, "k") == data  # type: ignore[arg-type]


def test_other_s3_errors_carry_s3s_message(moto_endpoint: str, s3_url: str) -> None:
    # Object Lock headers against a bucket created without Object Lock: S3 (and moto) refuse with 400.
    s3 = open_storage(f"{s3_url}/nolock", endpoint_url=moto_endpoint, object_lock_days=1, max_attempts=1)
    with pytest.raises(RepositoryUnavailable, match=r"unable to put s3://.*/nolock/k: \w+: .+ \(HTTP 400\)"):
        s3.put("k", [b"x"])


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def fail_upload_part(storage: S3Storage, times: int) -> list[int]:
    """Answer the first `times` UploadPart requests with a 500 before they reach the server
    (botocore's own before-send hook, as a flaky store would)."""
    from botocore.awsrequest import AWSResponse

    sent: list[int] = []
    body = b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"

    def handler(request: Any, **_: Any) -> Any:
        sent.append(1)
        if len(sent) <= times:
            return AWSResponse(request.url, 500, {}, _RawBody(body))
        return None

    storage.client.meta.events.register("before-send.s3.UploadPart", handler)
    return sent


def test_part_upload_is_retried_after_transient_errors(moto_endpoint: str, s3_url: str) -> None:
    s3 = open_storage(f"{s3_url}/{uuid.uuid4().hex[:8]}", endpoint_url=moto_endpoint, part_size=PART, max_attempts=2)
    assert isinstance(s3, S3Storage)
    sent = fail_upload_part(s3, times=3)  # botocore retries once, then opsdb retries the part
    data = os.urandom(2 * PART + 1)
    s3.put("k", chunks_of(data))
    assert read_all(s3, "k") == data
    assert len(sent) == 3 + 3  # three failures, then the three parts


def test_part_upload_failing_for_good_aborts(moto_endpoint: str, s3_url: str, s3_client: Any) -> None:
    s3 = open_storage(f"{s3_url}/{uuid.uuid4().hex[:8]}", endpoint_url=moto_endpoint, part_size=PART, max_attempts=1)
    assert isinstance(s3, S3Storage)
    s3.upload_concurrency = 1
    sent = fail_upload_part(s3, times=10**6)
    with pytest.raises(RepositoryUnavailable, match=r"unable to put s3://.*/k \(part 1\): InternalError"):
        s3.put("k", chunks_of(os.urandom(2 * PART + 1)))
    assert len(sent) == 3  # PART_ATTEMPTS tries of part 1; part 2 waits for a free slot and never goes
    assert s3.stat("k") is None
    assert s3_client.list_multipart_uploads(Bucket=s3.bucket, Prefix=s3._base).get("Uploads", []) == []
