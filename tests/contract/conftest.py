"""The `storage` fixture: one fresh, empty Storage per test, for every driver.

Drivers: memory, local (under tmp_path), s3 (moto) and s3rver: a fresh prefix in a bucket of the
module on that S3 server, with the smallest part size S3 allows so multipart paths run on small data.
The S3 storages know what their store honours of create-only writes, as after reading the repository
marker: moto refuses a second create-only write itself, s3rver does not (the driver's guarded
fallback then keeps objects from being replaced).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from opsdb.storage.base import Storage
from opsdb.storage.local import LocalStorage
from opsdb.storage.memory import MemoryStorage
from tests.fixtures.s3 import S3Server, empty_and_delete

PART_SIZE = 5 * 2**20  # S3's minimum part size; the s3 driver under test uses it
DRIVERS = ["memory", "local", "s3", "s3rver"]
S3_DRIVERS = {"s3": "moto_server", "s3rver": "s3rver_server"}


@pytest.fixture(scope="module")
def bucket_on() -> Iterator[Callable[[S3Server], str]]:
    """bucket_on(server) -> a bucket of this module on that server (made on first use)."""
    made: dict[str, tuple[S3Server, str]] = {}

    def get(server: S3Server) -> str:
        if server.name not in made:
            name = f"opsdb-contract-{uuid.uuid4().hex[:12]}"
            server.client.create_bucket(Bucket=name)
            made[server.name] = (server, name)
        return made[server.name][1]

    yield get
    for server, name in made.values():
        empty_and_delete(server.client, name)


def make_storage(driver: str, request: pytest.FixtureRequest) -> Storage:
    if driver == "memory":
        return MemoryStorage()
    if driver == "local":
        tmp_path = request.getfixturevalue("tmp_path")
        return LocalStorage(tmp_path / "repo")
    if driver in S3_DRIVERS:
        server: S3Server = request.getfixturevalue(S3_DRIVERS[driver])
        bucket = request.getfixturevalue("bucket_on")(server)
        return server.storage(f"s3://{bucket}/repo/{uuid.uuid4().hex[:8]}", part_size=PART_SIZE, max_attempts=2)
    raise AssertionError(driver)


@pytest.fixture(params=DRIVERS)
def storage(request: pytest.FixtureRequest) -> Storage:
    return make_storage(request.param, request)


@pytest.fixture
def storage_factory(request: pytest.FixtureRequest):
    """storage_factory(driver) -> a fresh Storage of that driver ("memory", "local", "s3", "s3rver")."""
    return lambda driver: make_storage(driver, request)
