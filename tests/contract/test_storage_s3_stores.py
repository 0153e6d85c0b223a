"""The S3 driver on both S3 implementations of the suite, moto and s3rver: multipart, pagination,
batching, and create-only writes, which moto refuses itself (If-None-Match: *) and s3rver ignores (the
driver's guarded fallback then keeps every object from being replaced).

The `s3` fixture knows what its store honours, as a storage opened after reading the repository marker.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from opsdb.errors import Conflict
from opsdb.storage.s3 import S3Storage
from tests.contract.s3_helpers import PART, chunks_of, count_calls, read_all
from tests.fixtures.s3 import S3Server, both_s3_servers

s3_server = both_s3_servers()


def uploads_left(s3: S3Storage, server: S3Server) -> list[Any]:
    """Multipart uploads neither completed nor aborted under the storage's prefix, where the store can
    list them (s3rver implements neither ListMultipartUploads nor AbortMultipartUpload: the tests
    count the driver's abort requests instead)."""
    if server.name != "moto":
        return []
    return list(server.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=s3._base).get("Uploads", []))


@pytest.fixture
def s3(s3_server: S3Server, s3_url: str) -> S3Storage:
    return s3_server.storage(f"{s3_url}/{uuid.uuid4().hex[:8]}", part_size=PART, max_attempts=2)


def test_many_parts_with_concurrency(s3: S3Storage, s3_server: S3Server, s3_client: Any) -> None:
    s3.upload_concurrency = 3
    data = os.urandom(12 * PART + 777)
    parts = count_calls(s3, "UploadPart")
    info = s3.put("big.bin", chunks_of(data))
    assert info.size == len(data)
    assert len(parts) == 13
    head = s3_client.head_object(Bucket=s3.bucket, Key=f"{s3._base}big.bin")
    if s3_server.name == "moto":  # s3rver's ETag of a multipart object is an MD5 like any other
        assert head["ETag"].strip('"').endswith("-13")  # a 13-part multipart object
    assert hashlib.sha256(read_all(s3, "big.bin")).digest() == hashlib.sha256(data).digest()


def test_single_request_below_part_size(s3: S3Storage) -> None:
    puts, creates = count_calls(s3, "PutObject"), count_calls(s3, "CreateMultipartUpload")
    s3.put("small", chunks_of(os.urandom(PART - 1)))
    s3.put("exact", chunks_of(os.urandom(PART)))  # exactly one part still fits one PutObject
    assert (len(puts), len(creates)) == (2, 0)


def test_failed_multipart_is_aborted(s3: S3Storage, s3_server: S3Server) -> None:
    def failing() -> Iterator[bytes]:
        yield os.urandom(3 * PART)
        raise RuntimeError("pg_basebackup died")

    aborts = count_calls(s3, "AbortMultipartUpload")
    with pytest.raises(RuntimeError, match="pg_basebackup died"):
        s3.put("backups/x/base.tar", failing())
    assert len(aborts) == 1
    assert uploads_left(s3, s3_server) == []
    assert s3.stat("backups/x/base.tar") is None


def test_create_only_decided_at_complete(s3: S3Storage, s3_server: S3Server, s3_client: Any) -> None:
    """Another writer creates the key while our multipart upload is in progress: Complete's
    If-None-Match refuses, ours is aborted, and theirs stays."""

    def racing() -> Iterator[bytes]:
        yield os.urandom(2 * PART + 1)  # both first parts are read: the early existence check has passed
        s3_client.put_object(Bucket=s3.bucket, Key=f"{s3._base}wal/seg", Body=b"the other writer")
        yield os.urandom(PART)

    aborts = count_calls(s3, "AbortMultipartUpload")
    with pytest.raises(Conflict, match="already exists"):
        s3.put("wal/seg", racing(), if_absent=True)
    assert len(aborts) == 1
    assert read_all(s3, "wal/seg") == b"the other writer"
    assert uploads_left(s3, s3_server) == []


def test_list_paginates(s3: S3Storage) -> None:
    s3.list_page_size = 3
    names = [f"wal/{i:04d}" for i in range(10)]
    for n in reversed(names):
        s3.put(n, [n.encode()])
    calls = count_calls(s3, "ListObjectsV2")
    assert [i.key for i in s3.list("wal/")] == names
    assert len(calls) == 4


def test_delete_batches(s3: S3Storage) -> None:
    s3.delete_batch = 4
    names = [f"d/{i}" for i in range(10)]
    for n in names:
        s3.put(n, [b"x"])
    calls = count_calls(s3, "DeleteObjects")
    s3.delete(names + ["d/missing"])
    assert len(calls) == 3
    assert list(s3.list("")) == []


def test_root_of_bucket_and_folder_placeholders(s3_server: S3Server, s3_bucket: str, s3_client: Any) -> None:
    s3 = s3_server.storage(f"s3://{s3_bucket}")
    assert s3.url == f"s3://{s3_bucket}"
    s3_client.put_object(Bucket=s3_bucket, Key="zz-folder/", Body=b"")
    s3.put("zz-folder/a", [b"1"])
    assert [i.key for i in s3.list("zz-folder")] == ["zz-folder/a"]
