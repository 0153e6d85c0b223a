"""The botocore side of the S3 driver (storage/s3.py): a lean client, and botocore's errors as opsdb's.

Only the S3 driver imports this (with storage/s3.py, the only botocore importers). botocore's own
session, not boto3's: the client is the same, without importing boto3 and s3transfer (about 3 MB of
RSS and 0.1 s of start-up that no command here uses). A Session per client: a shared session is not
thread-safe, clients are.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from typing import Any

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from opsdb.errors import UsageError
from opsdb.storage.base import Conflict, NotFound, RepositoryUnavailable

_RETRYABLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
}


def make_client(
    url: str,
    *,
    endpoint_url: str | None,
    region: str | None,
    checksum_mode: str,
    max_attempts: int,
    max_pool_connections: int,
    connect_timeout: float,
    read_timeout: float,
) -> Any:
    """An S3 client for the store at `url` (named in a UsageError for settings botocore refuses)."""
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # total, first try included
        request_checksum_calculation=checksum_mode,
        response_checksum_validation=checksum_mode,
        max_pool_connections=max_pool_connections,
        # S3-compatible stores rarely have wildcard DNS for virtual-hosted buckets.
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    try:
        return new_session().create_client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    except (ValueError, BotoCoreError) as e:
        raise UsageError(f"invalid S3 settings for {url}: {e}") from e


def map_error(doing: str, where: str, bucket: str, e: Exception) -> Exception:
    """A botocore error as opsdb's: NotFound, Conflict (create-only refused) or RepositoryUnavailable.
    where: the object's URL (and how far an operation got), as the message names it."""
    if not isinstance(e, ClientError):
        return RepositoryUnavailable(f"unable to {doing} {where}: {e}")
    err = e.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return RepositoryUnavailable(f"unable to {doing} {where}: bucket {bucket!r} does not exist")
    if code in ("NoSuchKey", "NotFound", "404") or status == 404:
        return NotFound(f"unable to {doing} {where}: no such object")
    if code == "PreconditionFailed" or status == 412:
        return Conflict(f"unable to {doing} {where}: object already exists")
    if code == "ConditionalRequestConflict":
        return Conflict(f"unable to {doing} {where}: another writer created it at the same time")
    message = err.get("Message") or "no message"
    return RepositoryUnavailable(f"unable to {doing} {where}: {code or 'error'}: {message} (HTTP {status})")


def out_of_order(where: str, before: str, after: str) -> RepositoryUnavailable:
    """A store that does not list in S3's order (s3rver lists '/' before '-' and '.'): callers rely on
    the order (the storage contract), so this is an error rather than a silently different listing."""
    return RepositoryUnavailable(
        f"unable to list {where}: the store listed {after!r} after {before!r}, not in the byte order of "
        "S3's ListObjectsV2 that opsdb relies on"
    )


def retryable(e: Exception) -> bool:
    """Worth another try: throttling, a server-side error, or the connection itself."""
    if isinstance(e, ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or e.response.get("Error", {}).get("Code") in _RETRYABLE_CODES
    return isinstance(e, BotoCoreError)  # connection reset, timeouts, endpoint unreachable


def part_checksum(uploaded: dict[str, Any]) -> dict[str, Any]:
    """A part's checksum for CompleteMultipartUpload, when it was uploaded with one (locked buckets)."""
    return {"ChecksumSHA256": uploaded["ChecksumSHA256"]} if "ChecksumSHA256" in uploaded else {}


def new_session() -> botocore.session.Session:
    """A botocore session whose data loader is S3Loader."""
    session = botocore.session.Session()
    session.register_component("data_loader", S3Loader(session.get_config_variable("data_path")))
    return session


class S3Loader(botocore.loaders.Loader):
    """botocore's data loader, minus what an S3 client never reads but would keep alive as long as it
    lives. Models are parsed into plain dicts (not OrderedDicts: insertion order is kept all the
    same) with their documentation strings emptied (botocore reads them only for help texts), and
    endpoints.json keeps only the "s3" entries of its partitions (it describes every AWS service).
    Measured: 11.2 MB of Python objects per client -> 2.7 MB, and a smaller peak while parsing."""

    def __init__(self, data_path: str | None) -> None:
        paths = [os.path.expanduser(os.path.expandvars(p)) for p in (data_path or "").split(os.pathsep) if p]
        super().__init__(extra_search_paths=paths, file_loader=LeanJSONFileLoader())

    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        data, path = super().load_data_with_path(name)
        if name == "endpoints" and isinstance(data, dict):
            partitions = [
                {**p, "services": {k: v for k, v in p.get("services", {}).items() if k == "s3"}}
                for p in data.get("partitions", [])
            ]
            data = {**data, "partitions": partitions}
            self._cache[("load_data_with_path", name)] = (data, path)  # instance_cache's dict: drop the full copy
        return data, path


class LeanJSONFileLoader(botocore.loaders.JSONFileLoader):
    def _load_file(self, full_path: str, open_method: Any) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as fp:
            payload = fp.read()
        return json.loads(payload, object_pairs_hook=lean_object)


def lean_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: "" if k == "documentation" and isinstance(v, str) else v for k, v in pairs}


class BodyReader(io.RawIOBase):
    """A GetObject body as a raw stream; network errors mid-read become RepositoryUnavailable."""

    def __init__(self, body: Any, on_error: Callable[[Exception], Exception]) -> None:
        self._body = body
        self._on_error = on_error  # the storage's mapping, naming the object

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self._body.read(len(b))
        except (ClientError, BotoCoreError) as e:
            raise self._on_error(e) from e
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
