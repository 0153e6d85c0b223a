"""The S3 driver's memory measures: a lean botocore loader (only S3's endpoint data, no documentation
strings, same client) and request bodies read in bounded pieces."""

from __future__ import annotations

import io

import pytest

from opsdb.storage.s3 import S3Storage
from opsdb.storage.s3client import S3Loader
from opsdb.storage.s3parts import BODY_READ
from opsdb.storage.s3parts import BodyReads as _BodyReads


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def test_endpoints_keep_only_s3_in_every_partition() -> None:
    loader = S3Loader(None)
    data, _ = loader.load_data_with_path("endpoints")
    assert data["partitions"], "partitions must survive"
    for partition in data["partitions"]:
        assert set(partition["services"]) <= {"s3"}
        assert partition["regions"]  # the partition's own description is kept
    assert loader.load_data_with_path("endpoints")[0] == data  # the cache holds the trimmed copy


def test_models_are_plain_dicts_without_documentation() -> None:
    model = S3Loader(None).load_service_model("s3", "service-2")
    assert type(model) is dict
    op = model["operations"]["PutObject"]
    assert op.get("documentation", "") == ""
    assert list(model["shapes"]["PutObjectRequest"]["members"])[:2] == ["ACL", "Body"]  # order kept


@pytest.mark.parametrize(
    ("region", "endpoint_url"),
    [
        ("eu-west-1", None),
        ("cn-north-1", None),
        ("us-east-1", None),
        (None, None),
        ("us-east-1", "http://127.0.0.1:9000"),
    ],
)
def test_clients_resolve_endpoints_as_a_plain_botocore_client_does(
    region: str | None, endpoint_url: str | None
) -> None:
    import botocore.session

    lean = S3Storage("bucket", endpoint_url=endpoint_url, region=region).client
    plain = botocore.session.Session().create_client("s3", endpoint_url=endpoint_url, region_name=region)
    assert lean.meta.endpoint_url == plain.meta.endpoint_url
    assert lean.meta.region_name == plain.meta.region_name
    params = {"Bucket": "bucket", "Key": "k"}
    url = lean.generate_presigned_url("get_object", Params=params)
    assert url.split("?")[0] == plain.generate_presigned_url("get_object", Params=params).split("?")[0]


def test_bodies_hand_out_bounded_reads_and_stay_seekable() -> None:
    data = bytes(range(256)) * 1024  # 256 KiB
    body = _BodyReads(io.BytesIO(data))
    assert len(body.read(1 << 20)) == BODY_READ  # botocore asks for 1 MiB
    assert body.tell() == BODY_READ
    pieces = iter(lambda: body.read(1 << 20), b"")
    assert b"".join([data[:BODY_READ], *pieces]) == data
    body.seek(0)
    assert body.read() == data  # read() without a size still means everything
    body.seek(0, io.SEEK_END)
    assert body.tell() == len(data)
    body.seek(10)
    assert body.read(5) == data[10:15]
