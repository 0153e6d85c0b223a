"""The `storage` fixture: one fresh, empty Storage per test, for every driver.

Drivers: memory, local (under tmp_path) and s3 (a fresh prefix in the module's bucket on the moto
server, with the smallest part size S3 allows so multipart paths run on small data).
"""

from __future__ import annotations

import uuid

import pytest

from opsdb.storage import open_storage
from opsdb.storage.base import Storage
from opsdb.storage.local import LocalStorage
from opsdb.storage.memory import MemoryStorage

PART_SIZE = 5 * 2**20  # S3's minimum part size; the s3 driver under test uses it
DRIVERS = ["memory", "local", "s3"]


def make_storage(driver: str, request: pytest.FixtureRequest) -> Storage:
    if driver == "memory":
        return MemoryStorage()
    if driver == "local":
        tmp_path = request.getfixturevalue("tmp_path")
        return LocalStorage(tmp_path / "repo")
    if driver == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        url = request.getfixturevalue("s3_url")
        return open_storage(f"{url}/{uuid.uuid4().hex[:8]}", endpoint_url=endpoint, part_size=PART_SIZE, max_attempts=2)
    raise AssertionError(driver)


@pytest.fixture(params=DRIVERS)
def storage(request: pytest.FixtureRequest) -> Storage:
    return make_storage(request.param, request)


@pytest.fixture
def storage_factory(request: pytest.FixtureRequest):  # noqa: ANN201
    """storage_factory(driver) -> a fresh Storage of that driver ("memory", "local", "s3")."""
    return lambda driver: make_storage(driver, request)
