"""How S3 errors map to opsdb errors (ClientError built the way botocore builds it; no network)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from opsdb.errors import Conflict, NotFound, RepositoryUnavailable
from opsdb.storage.s3 import S3Storage
from opsdb.storage.s3client import retryable


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.fixture(scope="module")
def s3() -> S3Storage:
    return S3Storage("bucket", "prefix", endpoint_url="http://127.0.0.1:9", region="us-east-1")


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (client_error("NoSuchKey", 404, "The specified key does not exist."), NotFound, "no such object"),
        (client_error("404", 404), NotFound, "no such object"),
        (client_error("PreconditionFailed", 412, "At least one of the pre-conditions"), Conflict, "already exists"),
        (client_error("ConditionalRequestConflict", 409, "A conflicting operation"), Conflict, "at the same time"),
        (
            client_error("NoSuchBucket", 404, "The specified bucket does not exist"),
            RepositoryUnavailable,
            "bucket 'bucket'",
        ),
        (
            client_error("AccessDenied", 403, "Access Denied"),
            RepositoryUnavailable,
            "unable to put s3://bucket/prefix/a/b: AccessDenied: Access Denied (HTTP 403)",
        ),
        (client_error("SlowDown", 503, "Please reduce your request rate."), RepositoryUnavailable, "SlowDown"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9/x"), RepositoryUnavailable, "Could not connect"),
    ],
)
def test_error_mapping(s3: S3Storage, error: Exception, kind: type, text: str) -> None:
    mapped = s3._error("put", "a/b", error)
    assert type(mapped) is kind
    assert text in str(mapped)
    assert str(mapped).startswith("unable to put s3://bucket/prefix/a/b")


def test_what_is_retried() -> None:
    assert retryable(client_error("SlowDown", 503))
    assert retryable(client_error("InternalError", 500))
    assert retryable(client_error("RequestTimeout", 400))
    assert retryable(EndpointConnectionError(endpoint_url="http://x"))
    assert not retryable(client_error("AccessDenied", 403))
    assert not retryable(client_error("PreconditionFailed", 412))
