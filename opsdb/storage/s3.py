"""s3:// driver: AWS S3 or any S3-compatible store (MinIO, Ceph RGW, R2, ...). The only boto3/botocore importer.

A put streams a chunk iterator of unknown length in bounded memory: objects smaller than one part
go up as a single PutObject; anything larger becomes a multipart upload whose parts are spooled (RAM up
to 1 MiB, then an unlinked temp file) and uploaded as they fill, at most `upload_concurrency` at
once, so memory does not depend on the part size. The part size doubles
every 1000 parts (part_size_for), so the 10,000-part limit is never hit before the documented
maximum object size (max_object_size: about 12.7 TiB from the default 16 MiB). S3 publishes a
multipart object only at CompleteMultipartUpload, and any failure aborts the upload, so nothing
half-written is ever visible. Create-only writes use `If-None-Match: *`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime
import io
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from opsdb.errors import OperationFailed, UsageError
from opsdb.storage.base import (
    Conflict,
    NotFound,
    ObjectInfo,
    RepositoryUnavailable,
    check_key,
    check_metadata,
    check_prefix,
    object_url,
)

MIN_PART_SIZE = 5 * 2**20  # S3: every part but the last must be at least 5 MiB
MAX_PART_SIZE = 5 * 2**30  # S3: at most 5 GiB per part
MAX_PARTS = 10_000
PARTS_PER_SIZE_STEP = 1000  # the part size doubles after every this many parts
PART_ATTEMPTS = 3  # whole-part retries on top of botocore's own per-request retries
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
SPOOL_IN_MEMORY = 2**20  # a part is kept in RAM up to this size, then spooled to a temp file
BODY_READ = 64 * 1024  # the largest read botocore gets from a part's body (see _BodyReads)
CHECKSUM_MODES = ("when_required", "when_supported")
_RETRYABLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
}


def part_size_for(part_number: int, base: int, step: int = PARTS_PER_SIZE_STEP) -> int:
    """Size of part `part_number` (1-based) when streaming with `base` as the first part size:
    base for parts 1-1000, 2*base for 1001-2000, ... capped at S3's 5 GiB."""
    if not 1 <= part_number <= MAX_PARTS:
        raise ValueError(f"part number {part_number} outside 1..{MAX_PARTS}")
    return min(base << ((part_number - 1) // step), MAX_PART_SIZE)


def max_object_size(base: int, step: int = PARTS_PER_SIZE_STEP) -> int:
    """The largest object a stream can become with first part size `base` (all 10,000 parts full)."""
    return sum(part_size_for(n, base, step) for n in range(1, MAX_PARTS + 1))


class S3Storage:
    features = frozenset({"conditional_put"})

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        checksum_mode: str = "when_required",
        part_size: int = 16 * 2**20,
        max_attempts: int = 5,
        object_lock_days: int = 0,
        upload_concurrency: int = 2,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        if checksum_mode not in CHECKSUM_MODES:
            raise UsageError(f"invalid checksum_mode {checksum_mode!r}: expected one of {', '.join(CHECKSUM_MODES)}")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise UsageError(
                f"invalid part_size {part_size}: S3 needs {MIN_PART_SIZE} (5 MiB) to {MAX_PART_SIZE} (5 GiB)"
            )
        if max_attempts < 1 or upload_concurrency < 1 or object_lock_days < 0:
            raise UsageError(
                "invalid S3 options: max_attempts and upload_concurrency must be >= 1, object_lock_days >= 0"
            )
        self.bucket = bucket
        prefix = prefix.strip("/")
        self._base = prefix + "/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.part_size = part_size
        self.object_lock_days = object_lock_days
        self.upload_concurrency = upload_concurrency
        self.list_page_size = 1000  # tests lower it to exercise pagination
        self.delete_batch = DELETE_BATCH  # tests lower it to exercise batching
        self.parts_per_step = PARTS_PER_SIZE_STEP  # tests lower it to watch the part size grow
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max_attempts},  # total, first try included
            request_checksum_calculation=checksum_mode,
            response_checksum_validation=checksum_mode,
            max_pool_connections=max(10, upload_concurrency + 2),
            # S3-compatible stores rarely have wildcard DNS for virtual-hosted buckets.
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        try:
            # A Session per storage: a shared session is not thread-safe, clients are. botocore's own
            # session, not boto3's: the client is the same, without importing boto3 and s3transfer
            # (about 3 MB of RSS and 0.1 s of start-up that no command here uses).
            # `client` is public for diagnostics and tests (event hooks), not for callers' I/O.
            self.client: Any = _s3_session().create_client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        except (ValueError, BotoCoreError) as e:
            raise UsageError(f"invalid S3 settings for {self.url}: {e}") from e

    # --- writing ------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        if_absent: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        reader = _PartReader(chunks)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._name(key), "Metadata": meta, **self._lock_args()}
        pending: list[_Spool] = []
        try:
            pending.append(reader.read(self.part_size))
            if pending[0].size == self.part_size:
                pending.append(reader.read(part_size_for(2, self.part_size, self.parts_per_step)))
            if pending[-1].size == 0 and len(pending) == 2:
                pending.pop().close()
            if len(pending) == 1:  # it fits one request
                if if_absent:
                    args["IfNoneMatch"] = "*"
                self._call("put", key, self.client.put_object, Body=_BodyReads(pending[0].file), **args)
                size = pending[0].size
            else:
                if if_absent and self.stat(key) is not None:  # fail before uploading gigabytes; Complete decides
                    raise Conflict(f"unable to put {object_url(self.url, key)}: object already exists")
                size = self._multipart(key, args, reader, pending, if_absent)
        finally:
            for spool in pending:
                spool.close()
        return ObjectInfo(key=key, size=size, mtime=time.time(), metadata=meta)

    def _multipart(
        self, key: str, args: dict[str, Any], reader: _PartReader, pending: list[_Spool], if_absent: bool
    ) -> int:
        """Upload parts as they are read. `pending` holds parts already read; every part is closed
        (its temp file freed) by the worker that uploaded it, or by the caller on failure."""
        upload_id = self._call("put", key, self.client.create_multipart_upload, **args)["UploadId"]
        where = {"Bucket": self.bucket, "Key": args["Key"], "UploadId": upload_id}
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.upload_concurrency, thread_name_prefix="s3-part")
        in_flight: collections.deque[concurrent.futures.Future[dict[str, Any]]] = collections.deque()
        parts: list[dict[str, Any]] = []
        size = 0
        number = 0
        unsent = collections.deque(pending)  # read but not yet handed to a worker
        owned = list(pending)  # every spool not yet closed, so a failure frees them all
        try:
            while True:
                spool = unsent.popleft() if unsent else reader.read(self._part_size(number + 1))
                owned = [s for s in owned if not s.closed] + ([] if spool in owned else [spool])
                if spool.size == 0:
                    spool.close()
                    break
                number += 1
                size += spool.size
                if len(in_flight) >= self.upload_concurrency:  # bounded queue: wait for a free slot
                    parts.append(in_flight.popleft().result())
                in_flight.append(pool.submit(self._upload_part, key, where, number, spool))
                if number == MAX_PARTS:
                    extra = reader.read(1)
                    extra.close()
                    if extra.size:
                        raise OperationFailed(
                            f"unable to put {object_url(self.url, key)}: the stream exceeds the largest object S3 "
                            f"allows with part_size {self.part_size} "
                            f"({max_object_size(self.part_size, self.parts_per_step)} bytes)"
                        )
                    break
            parts.extend(f.result() for f in in_flight)
            complete: dict[str, Any] = {"MultipartUpload": {"Parts": parts}, **where}
            if if_absent:
                complete["IfNoneMatch"] = "*"
            self._call("put", key, self.client.complete_multipart_upload, **complete)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            for spool in owned:
                spool.close()
            try:
                self.client.abort_multipart_upload(**where)
            except (ClientError, BotoCoreError):
                pass  # the original error matters more; a bucket lifecycle rule reaps orphaned uploads
            raise
        pool.shutdown(wait=True)
        return size

    def _part_size(self, number: int) -> int:
        return part_size_for(number, self.part_size, self.parts_per_step)

    def _upload_part(self, key: str, where: dict[str, Any], number: int, spool: _Spool) -> dict[str, Any]:
        extra = {"ChecksumAlgorithm": "SHA256"} if self.object_lock_days else {}
        try:
            for attempt in range(PART_ATTEMPTS):
                spool.file.seek(0)
                try:
                    r = self.client.upload_part(PartNumber=number, Body=_BodyReads(spool.file), **where, **extra)
                except (ClientError, BotoCoreError) as e:
                    if attempt + 1 < PART_ATTEMPTS and _retryable(e):
                        time.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
                        continue
                    raise self._error("put", key, e, detail=f"part {number}") from e
                part = {"PartNumber": number, "ETag": r["ETag"]}
                if "ChecksumSHA256" in r:
                    part["ChecksumSHA256"] = r["ChecksumSHA256"]
                return part
            raise AssertionError("unreachable")
        finally:
            spool.close()

    def _lock_args(self) -> dict[str, Any]:
        if not self.object_lock_days:
            return {}
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=self.object_lock_days)
        # Lock headers require Content-MD5 or an SDK checksum; with checksum_mode=when_required
        # botocore sends neither unless asked, so ask explicitly.
        return {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until, "ChecksumAlgorithm": "SHA256"}

    def delete(self, keys: Iterable[str]) -> None:
        names = [self._name(check_key(k)) for k in keys]
        for i in range(0, len(names), self.delete_batch):
            batch = names[i : i + self.delete_batch]
            r = self._call(
                "delete",
                batch[0][len(self._base) :],
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True},
            )
            errors = [e for e in r.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                e = errors[0]
                raise RepositoryUnavailable(
                    f"unable to delete {object_url(self.url, e.get('Key', '')[len(self._base) :])}: "
                    f"{e.get('Code')}: {e.get('Message')} ({len(errors)} of {len(batch)} objects not deleted)"
                )

    # --- reading ------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        r = self._call("open", key, self.client.get_object, Bucket=self.bucket, Key=self._name(key))
        return io.BufferedReader(_BodyReader(r["Body"], self, key), buffer_size=256 * 1024)  # type: ignore[return-value]

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            r = self._call("stat", key, self.client.head_object, Bucket=self.bucket, Key=self._name(key))
        except NotFound:
            return None
        return ObjectInfo(
            key=key, size=r["ContentLength"], mtime=r["LastModified"].timestamp(), metadata=dict(r.get("Metadata", {}))
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._base + prefix, PaginationConfig={"PageSize": self.list_page_size}
        )
        cut = len(self._base)
        try:
            for page in pages:  # S3 lists in UTF-8 byte order, which is the contract's order
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):
                        continue  # "folder" placeholders made by consoles are not objects
                    yield ObjectInfo(key=obj["Key"][cut:], size=obj["Size"], mtime=obj["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as e:
            raise self._error("list", prefix, e) from e

    # --- helpers ------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self._base + key

    def _call(self, doing: str, key: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as e:
            raise self._error(doing, key, e) from e

    def _error(self, doing: str, key: str, e: Exception, *, detail: str = "") -> Exception:
        where = object_url(self.url, key) + (f" ({detail})" if detail else "")
        if not isinstance(e, ClientError):
            return RepositoryUnavailable(f"unable to {doing} {where}: {e}")
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return RepositoryUnavailable(f"unable to {doing} {where}: bucket {self.bucket!r} does not exist")
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return NotFound(f"unable to {doing} {where}: no such object")
        if code == "PreconditionFailed" or status == 412:
            return Conflict(f"unable to {doing} {where}: object already exists")
        if code == "ConditionalRequestConflict":
            return Conflict(f"unable to {doing} {where}: another writer created it at the same time")
        message = err.get("Message") or "no message"
        return RepositoryUnavailable(f"unable to {doing} {where}: {code or 'error'}: {message} (HTTP {status})")


def _s3_session() -> botocore.session.Session:
    session = botocore.session.Session()
    session.register_component("data_loader", _S3Loader(session.get_config_variable("data_path")))
    return session


class _S3Loader(botocore.loaders.Loader):
    """botocore's data loader, minus what an S3 client never reads but would keep alive as long as it
    lives. Models are parsed into plain dicts (not OrderedDicts: insertion order is kept all the
    same) with their documentation strings emptied (botocore reads them only for help texts), and
    endpoints.json keeps only the "s3" entries of its partitions (it describes every AWS service).
    Measured: 11.2 MB of Python objects per client -> 2.7 MB, and a smaller peak while parsing."""

    def __init__(self, data_path: str | None) -> None:
        paths = [os.path.expanduser(os.path.expandvars(p)) for p in (data_path or "").split(os.pathsep) if p]
        super().__init__(extra_search_paths=paths, file_loader=_LeanJSONFileLoader())

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


class _LeanJSONFileLoader(botocore.loaders.JSONFileLoader):
    def _load_file(self, full_path: str, open_method: Any) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as fp:
            payload = fp.read()
        return json.loads(payload, object_pairs_hook=_lean_object)


def _lean_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: "" if k == "documentation" and isinstance(v, str) else v for k, v in pairs}


def _retryable(e: Exception) -> bool:
    if isinstance(e, ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or e.response.get("Error", {}).get("Code") in _RETRYABLE_CODES
    return isinstance(e, BotoCoreError)  # connection reset, timeouts, endpoint unreachable


class _Spool:
    """One part's bytes: in memory up to SPOOL_IN_MEMORY, then in an unlinked temp file, so memory
    stays flat whatever the part size (parts grow to 5 GiB on very long streams)."""

    def __init__(self) -> None:
        self.file: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed by owner
        self.size = 0

    @property
    def closed(self) -> bool:
        return bool(self.file.closed)

    def close(self) -> None:
        self.file.close()


class _BodyReads:
    """A part's spool as a request body, giving out at most BODY_READ bytes per read().

    botocore reads a body in 1 MiB pieces to hash it (SigV4 signs the payload on http:// endpoints,
    and object-lock checksums), in every upload thread at once; those short-lived 1 MiB buffers cost
    about 2.5 MB of RSS per concurrent upload (measured: a 100 MiB put with 2 in flight peaks 9.1 MB
    above its start with 1 MiB reads, 3.7 MB with 64 KiB ones), for no speed. read() without a size
    still returns everything, as a file does."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > BODY_READ:
            size = BODY_READ
        return bytes(self._file.read(size))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())


class _PartReader:
    """Cuts a chunk iterator into spools of an exact size (the last may be shorter, or empty at the end)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._rest = b""

    def read(self, n: int) -> _Spool:
        spool = _Spool()
        try:
            while spool.size < n:
                if self._rest:
                    chunk, self._rest = self._rest, b""
                else:
                    try:
                        chunk = next(self._it)
                    except StopIteration:
                        break
                room = n - spool.size
                if len(chunk) > room:
                    with memoryview(chunk) as view:
                        spool.file.write(view[:room])
                        self._rest = bytes(view[room:])
                    spool.size += room
                else:
                    spool.file.write(chunk)
                    spool.size += len(chunk)
            spool.file.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool


class _BodyReader(io.RawIOBase):
    """A GetObject body as a raw stream; network errors mid-read become RepositoryUnavailable."""

    def __init__(self, body: Any, storage: S3Storage, key: str) -> None:
        self._body = body
        self._storage = storage
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self._body.read(len(b))
        except (ClientError, BotoCoreError) as e:
            raise self._storage._error("read", self._key, e) from e
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
