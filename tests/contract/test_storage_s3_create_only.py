"""Create-only writes on both S3 implementations: the probe, the guarded fallback, `refuse`, and listings
of more than one page (1,000 keys).

moto refuses a second create-only write itself (If-None-Match: *); s3rver ignores the header on PutObject
and on CompleteMultipartUpload and replaces the object, like older MinIO or Ceph RGW. Each test runs on
both; "unknown" storages have no probe result (as before the repository marker records one) and so
take the guarded path on moto too.
"""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from opsdb.errors import Conflict, OperationFailed, RepositoryUnavailable
from opsdb.storage.createonly import IGNORED, REFUSED, probe_create_only
from opsdb.storage.s3 import WRITE_ID, S3Storage
from tests.contract.s3_helpers import PART, chunks_of, count_calls, read_all
from tests.fixtures.s3 import S3Server, both_s3_servers, empty_and_delete

s3_server = both_s3_servers()
EXPECTED = {"moto": REFUSED, "s3rver": IGNORED}  # what each store does with a second create-only write


@pytest.fixture(params=["assumed", "unknown"])
def s3(request: pytest.FixtureRequest, s3_server: S3Server, s3_url: str) -> S3Storage:
    """assumed: knows the store's probe result (from the marker); unknown: no result, so guarded."""
    storage = s3_server.storage(f"{s3_url}/{uuid.uuid4().hex[:8]}", part_size=PART, max_attempts=2)
    if request.param == "unknown":
        storage.create_only = None
    return storage


def test_probe_names_what_the_store_honours(s3_server: S3Server, s3_url: str, s3_client: Any) -> None:
    storage = s3_server.storage(f"{s3_url}/probe-{uuid.uuid4().hex[:8]}", max_attempts=2)
    probe = probe_create_only(storage, "probes/create-only-test", probed_at="2026-12-05T03:00:00Z")
    expected = EXPECTED[s3_server.name]
    assert (probe.put, probe.multipart, probe.probed_at) == (expected, expected, "2026-12-05T03:00:00Z")
    assert probe.honoured is (s3_server.name == "moto")
    assert ("NOT honoured" in probe.describe()) is (s3_server.name == "s3rver")
    assert list(storage.list("")) == []  # the probe key is gone


@pytest.mark.parametrize("size", [0, 100, 2 * PART + 1], ids=["empty", "one-request", "multipart"])
def test_second_create_only_write_never_replaces(s3: S3Storage, size: int) -> None:
    first, second = os.urandom(size), os.urandom(size)
    s3.put("wal/seg", chunks_of(first), if_absent=True, metadata={"kind": "wal"})
    with pytest.raises(Conflict, match="already exists"):
        s3.put("wal/seg", chunks_of(second), if_absent=True)
    assert read_all(s3, "wal/seg") == first
    info = s3.stat("wal/seg")
    assert info is not None and info.metadata == {"kind": "wal"}  # the guarded write id stays hidden


def test_guarded_put_checks_the_name_once_more_before_publishing(s3: S3Storage, s3_client: Any) -> None:
    """A one-request object goes up as a one-part upload when guarded: another writer that publishes
    the name while it uploads is found by the last check before Complete (or by Complete itself)."""

    def other_writer(**_: Any) -> None:
        s3_client.put_object(Bucket=s3.bucket, Key=f"{s3._base}catalog/1.json", Body=b"the other writer")

    s3.client.meta.events.register("before-call.s3.UploadPart", other_writer)
    s3.client.meta.events.register("before-call.s3.PutObject", other_writer)
    with pytest.raises(Conflict):
        s3.put("catalog/1.json", [b"{}"], if_absent=True)
    assert read_all(s3, "catalog/1.json") == b"the other writer"


def test_a_writer_replacing_ours_right_after_publishing_is_detected(s3_server: S3Server, s3_url: str) -> None:
    """The guarded path reads the published object back: when it is not the one this put wrote (a racer
    on a store that ignores If-None-Match replaced it), the put fails instead of reporting success."""
    s3 = s3_server.storage(f"{s3_url}/{uuid.uuid4().hex[:8]}", part_size=PART, max_attempts=2)
    s3.create_only = None  # guarded on both stores
    racer = s3_server.client

    def replace_after_complete(**_: Any) -> None:
        racer.put_object(Bucket=s3.bucket, Key=f"{s3._base}wal/seg", Body=b"racer")

    s3.client.meta.events.register("after-call.s3.CompleteMultipartUpload", replace_after_complete)
    with pytest.raises(Conflict, match="another writer published it at the same time"):
        s3.put("wal/seg", chunks_of(os.urandom(2 * PART + 1)), if_absent=True)


def test_refuse_policy(s3_server: S3Server, s3_url: str) -> None:
    s3 = s3_server.storage(f"{s3_url}/{uuid.uuid4().hex[:8]}", max_attempts=2, conditional_writes="refuse")
    s3.create_only = None  # not known yet: the first create-only write probes
    s3.put("plain", [b"an ordinary write is not create-only"])
    if s3_server.name == "moto":
        s3.put("wal/seg", [b"x"], if_absent=True)
        assert read_all(s3, "wal/seg") == b"x"
        return
    with pytest.raises(OperationFailed, match='conditional writes NOT honoured.*conditional_writes = "refuse"'):
        s3.put("wal/seg", [b"x"], if_absent=True)
    assert s3.stat("wal/seg") is None
    assert s3.create_only is not None and s3.create_only.put == IGNORED  # probed once, then remembered


def test_assumed_honouring_store_uses_one_request(s3_server: S3Server, s3_url: str) -> None:
    """On a store known to refuse, a create-only WAL segment is one PutObject (no checks around it)."""
    s3 = s3_server.storage(f"{s3_url}/{uuid.uuid4().hex[:8]}", max_attempts=2)
    calls = {op: count_calls(s3, op) for op in ("PutObject", "HeadObject", "CompleteMultipartUpload")}
    s3.put("wal/seg", [b"x" * 1000], if_absent=True)
    counts = {op: len(c) for op, c in calls.items()}
    if s3_server.name == "moto":
        assert counts == {"PutObject": 1, "HeadObject": 0, "CompleteMultipartUpload": 0}
    else:  # guarded: a check before Complete and the read-back after it
        assert counts == {"PutObject": 0, "HeadObject": 2, "CompleteMultipartUpload": 1}
    head = s3.client.head_object(Bucket=s3.bucket, Key=f"{s3._base}wal/seg")
    assert (WRITE_ID in head["Metadata"]) is (s3_server.name == "s3rver")


# --- listings of more than one page --------------------------------------------------------------

MANY = 1_050  # more than the 1,000 keys of one ListObjectsV2 page


@pytest.fixture
def many_keys(s3_server: S3Server) -> Iterator[tuple[S3Storage, str]]:
    """A bucket of its own holding MANY keys under a prefix (written 8 at a time)."""
    bucket = f"opsdb-many-{uuid.uuid4().hex[:12]}"
    s3_server.client.create_bucket(Bucket=bucket)
    s3 = s3_server.storage(f"s3://{bucket}/repo", max_attempts=1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: s3.put(f"wal/{n:05d}", [b"x"]), range(MANY)))
    yield s3, bucket
    empty_and_delete(s3_server.client, bucket)


def test_listing_more_than_one_page(many_keys: tuple[S3Storage, str]) -> None:
    s3, _ = many_keys
    calls = count_calls(s3, "ListObjectsV2")
    assert [i.key for i in s3.list("wal/")] == [f"wal/{n:05d}" for n in range(MANY)]
    assert len(calls) == 2


def test_listing_error_past_the_first_page_says_how_far_it_got(
    s3_server: S3Server, many_keys: tuple[S3Storage, str]
) -> None:
    """The bucket disappears between page 1 and page 2: the error names the page, how many keys were
    listed up to which, and the store's own error."""
    s3, bucket = many_keys
    listing = s3.list("wal/")
    seen = [next(listing).key for _ in range(1000)]  # all of page 1
    assert seen[-1] == "wal/00999"
    empty_and_delete(s3_server.client, bucket)
    with pytest.raises(RepositoryUnavailable) as err:
        next(listing)
    message = str(err.value)
    assert f"unable to list s3://{bucket}/repo/wal/ (page 2, after 1000 keys listed up to 'wal/00999')" in message
    assert f"bucket {bucket!r} does not exist" in message
