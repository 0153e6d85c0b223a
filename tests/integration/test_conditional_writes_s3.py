"""The conditional-write probe recorded in the repository marker and shown by `check`, on moto (which
refuses a second create-only write) and on s3rver (which ignores If-None-Match and replaces)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from opsdb.config import Settings
from opsdb.model.results import Status
from opsdb.ops.common.codec import open_repository
from opsdb.ops.health import check as health
from opsdb.repo import marker, storecaps
from opsdb.storage.createonly import IGNORED, REFUSED, CreateOnlyProbe
from tests.contract.s3_helpers import count_calls
from tests.fixtures.s3 import S3Server, both_s3_servers

s3_server = both_s3_servers()
EXPECTED = {"moto": REFUSED, "s3rver": IGNORED}


def settings_for(server: S3Server, url: str, **repository: Any) -> Settings:
    return Settings(
        repository={"url": url, "endpoint_url": server.endpoint, "region": "us-east-1", "max_attempts": 2, **repository}
    )


@pytest.fixture
def url(s3_url: str) -> str:
    return f"{s3_url}/{uuid.uuid4().hex[:8]}"


def test_the_first_create_only_write_probes_and_records_it(s3_server: S3Server, url: str) -> None:
    storage: Any = open_repository(settings_for(s3_server, url), writable=True)
    storage.put("clusters/main/opsdb-note", [b"an ordinary write probes nothing"])
    assert storage.create_only is None and marker.read_repository_marker(storage) is None
    storage.put("clusters/main/wal/a", [b"1"], if_absent=True)
    found = storecaps.recorded(storage)
    expected = EXPECTED[s3_server.name]
    assert found is not None and (found.put, found.multipart) == (expected, expected) and found.probed_at
    assert storage.create_only == found
    # a later writer takes it from the marker: no probe, and one PutObject where the store refuses
    later: Any = open_repository(settings_for(s3_server, url), writable=True)
    puts, completes = count_calls(later, "PutObject"), count_calls(later, "CompleteMultipartUpload")
    later.put("clusters/main/wal/b", [b"2"], if_absent=True)
    assert later.create_only == found
    assert (len(puts), len(completes)) == ((1, 0) if s3_server.name == "moto" else (0, 1))


def test_check_says_what_the_store_honours(s3_server: S3Server, url: str) -> None:
    report = health.check(lambda: settings_for(s3_server, url), None)
    repository = report.get("repository")
    assert repository is not None and repository.status is Status.OK, repository
    if s3_server.name == "moto":
        assert (
            "writable, conditional writes honoured: the store refuses a second create-only write" in repository.detail
        )
    else:
        assert (
            "writable, conditional writes NOT honoured: If-None-Match: * PutObject ignored, multipart ignored: "
            "create-only writes are guarded (docs/storage.md)"
        ) in repository.detail
    refusing = health.check(lambda: settings_for(s3_server, url, conditional_writes="refuse"), None)
    repository = refusing.get("repository")
    assert repository is not None
    if s3_server.name == "moto":
        assert repository.status is Status.OK
    else:  # the check's own create-only write is refused, naming why
        assert repository.status is Status.CRITICAL
        assert "conditional writes NOT honoured" in repository.detail
        assert 'conditional_writes = "refuse"' in repository.detail


def test_check_corrects_a_record_that_no_longer_holds(s3_server: S3Server, url: str) -> None:
    storage: Any = open_repository(settings_for(s3_server, url), writable=True)
    wrong = IGNORED if s3_server.name == "moto" else REFUSED
    marker.update_capabilities(storage, {storecaps.CAPABILITY: CreateOnlyProbe(wrong, wrong, "then").to_dict()})
    repository = health.check(lambda: settings_for(s3_server, url), None).get("repository")
    assert repository is not None and repository.status is Status.WARNING
    assert "the repository marker said conditional writes" in repository.detail and "now corrected" in repository.detail
    found = storecaps.recorded(storage)
    assert found is not None and found.put == EXPECTED[s3_server.name]
