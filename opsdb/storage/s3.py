"""s3:// driver: AWS S3 or any S3-compatible store (MinIO, Ceph RGW, R2, ...). With s3client.py (the client
and its errors), the only botocore importer; boto3 itself is never imported.

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
import contextlib
import datetime
import io
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from opsdb.errors import OperationFailed, UsageError
from opsdb.storage import createonly, s3client
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
from opsdb.storage.s3parts import (
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    PARTS_PER_SIZE_STEP,
    BodyReads,
    PartReader,
    Spool,
    max_object_size,
    part_size_for,
)

PART_ATTEMPTS = 3  # whole-part retries on top of botocore's own per-request retries
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
CHECKSUM_MODES = ("when_required", "when_supported")
WRITE_ID = "opsdb-write-id"  # user metadata a guarded put stamps on its object (hidden from stat())


class _Guard(NamedTuple):
    on: bool  # the guarded fallback: check, publish with one Complete, read back the write id
    header: bool  # send If-None-Match: * (not to a store that rejects the header itself)


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
        conditional_writes: str = "fallback",
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
        self.conditional_writes = createonly.check_policy(conditional_writes)
        # What the store was found to honour (the repository marker's probe result, or this process's
        # own probe); None: not known, so create-only writes take the guarded path.
        self.create_only: createonly.CreateOnlyProbe | None = None
        # Called once, at the first create-only write, to fill create_only (repo/storecaps.py reads the
        # repository marker, or probes and records): commands that write nothing create-only pay nothing.
        self.create_only_loader: Callable[[], createonly.CreateOnlyProbe | None] | None = None
        # `client` is public for diagnostics and tests (event hooks), not for callers' I/O
        self.client: Any = s3client.make_client(
            self.url,
            endpoint_url=endpoint_url,
            region=region,
            checksum_mode=checksum_mode,
            max_attempts=max_attempts,
            max_pool_connections=max(10, upload_concurrency + 2),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

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
        reader = PartReader(chunks)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._name(key), "Metadata": meta, **self._lock_args()}
        pending: list[Spool] = []
        try:
            pending.append(reader.read(self.part_size))
            if pending[0].size == self.part_size:
                pending.append(reader.read(part_size_for(2, self.part_size, self.parts_per_step)))
            if pending[-1].size == 0 and len(pending) == 2:
                pending.pop().close()
            request = "put" if len(pending) == 1 else "multipart"
            guard = self._guard(key, request) if if_absent else _Guard(False, False)
            single = request == "put" and not (guard.on and pending[0].size)  # guarded: a one-part upload
            if if_absent and (request == "multipart" or (guard.on and single)) and self.stat(key) is not None:
                # fail before uploading gigabytes (multipart: Complete and the guarded last check decide);
                # a guarded empty object has no upload to check before: this check is its only one
                raise Conflict(f"unable to put {object_url(self.url, key)}: object already exists")
            if guard.on:  # our own marker on the object tells whose it is after publishing
                args["Metadata"] = {**meta, WRITE_ID: secrets.token_hex(16)}
            if single:
                if guard.header:
                    args["IfNoneMatch"] = "*"
                self._call("put", key, self.client.put_object, Body=BodyReads(pending[0].file), **args)
                size = pending[0].size
            else:  # a guarded small object goes up as a one-part upload: only Complete publishes it
                size = self._multipart(key, args, reader, pending, guard)
            if guard.on:
                self._check_published(key, args["Metadata"][WRITE_ID])
        finally:
            for spool in pending:
                spool.close()
        return ObjectInfo(key=key, size=size, mtime=time.time(), metadata=meta)

    def _guard(self, key: str, request: str) -> _Guard:
        """How a create-only `request` ("put" or "multipart") is made safe on this store.

        Known to refuse: the store decides (If-None-Match: *). Otherwise the guarded fallback: the
        object is published by one CompleteMultipartUpload right after a check that the name is
        still free, then read back by HEAD; it must carry this put's write id (docs/storage.md)."""
        if self.create_only is None and self.create_only_loader is not None:
            loader, self.create_only_loader = self.create_only_loader, None  # its own writes are guarded
            self.create_only = loader()
        known = self.create_only
        if known is None and self.conditional_writes == "refuse":
            known = self.create_only = self.probe_create_only(createonly.probe_key())
        if known is not None and known.refuses(request):
            return _Guard(False, True)
        if known is not None and self.conditional_writes == "refuse":
            raise OperationFailed(
                f"unable to put {object_url(self.url, key)} create-only: {known.describe()}, "
                'and [repository] conditional_writes = "refuse"',
                hint='use a store that honours conditional writes, or conditional_writes = "fallback" '
                "(a guarded check-then-publish; docs/storage.md)",
            )
        return _Guard(True, known is None or not known.rejects_header("multipart"))

    def _check_published(self, key: str, write_id: str) -> None:
        """After a guarded publish: the object under key must be the one this put wrote."""
        r = self._call("put", key, self.client.head_object, Bucket=self.bucket, Key=self._name(key))
        if r.get("Metadata", {}).get(WRITE_ID) != write_id:
            raise Conflict(
                f"unable to put {object_url(self.url, key)}: another writer published it at the same time "
                "(the stored object is not the one this put wrote)"
            )

    def _multipart(
        self, key: str, args: dict[str, Any], reader: PartReader, pending: list[Spool], guard: _Guard
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
            if guard.header:
                complete["IfNoneMatch"] = "*"
            if guard.on and self.stat(key) is not None:  # the last look, as close to publishing as can be
                raise Conflict(f"unable to put {object_url(self.url, key)}: object already exists")
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

    def _upload_part(self, key: str, where: dict[str, Any], number: int, spool: Spool) -> dict[str, Any]:
        extra = {"ChecksumAlgorithm": "SHA256"} if self.object_lock_days else {}
        try:
            for attempt in range(PART_ATTEMPTS):
                spool.file.seek(0)
                try:
                    r = self.client.upload_part(PartNumber=number, Body=BodyReads(spool.file), **where, **extra)
                except (ClientError, BotoCoreError) as e:
                    if attempt + 1 < PART_ATTEMPTS and s3client.retryable(e):
                        time.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
                        continue
                    raise self._error("put", key, e, detail=f"part {number}") from e
                return {"PartNumber": number, "ETag": r["ETag"], **s3client.part_checksum(r)}
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

    def probe_create_only(self, key: str) -> createonly.CreateOnlyProbe:
        """Send the raw create-only requests twice to `key` (PutObject, then a one-part multipart
        upload): what does the store do with the second? The key is deleted afterwards."""
        check_key(key)
        where = {"Bucket": self.bucket, "Key": self._name(key)}
        # locked buckets want a checksum on every upload, as in put(); the first write is a plain one,
        # so a store that rejects the header itself is told apart from one that is down
        sums = {"ChecksumAlgorithm": "SHA256"} if self.object_lock_days else {}
        self._call("probe", key, self.client.put_object, Body=b"first", **where, **sums)
        try:
            put = self._probe_outcome(key, lambda: self.client.put_object(Body=b"2", IfNoneMatch="*", **where, **sums))
            upload_id = self._call("probe", key, self.client.create_multipart_upload, **where, **sums)["UploadId"]
            try:
                part = self._call(
                    "probe",
                    key,
                    self.client.upload_part,
                    UploadId=upload_id,
                    PartNumber=1,
                    Body=b"3",
                    **where,
                    **sums,
                )
                done = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"], **s3client.part_checksum(part)}]}
                multipart = self._probe_outcome(
                    key,
                    lambda: self.client.complete_multipart_upload(
                        UploadId=upload_id, MultipartUpload=done, IfNoneMatch="*", **where
                    ),
                )
            finally:
                with contextlib.suppress(ClientError, BotoCoreError):  # gone already when Complete succeeded
                    self.client.abort_multipart_upload(UploadId=upload_id, **where)
        finally:
            with contextlib.suppress(RepositoryUnavailable):  # a writer without delete rights: a harmless leftover
                self.delete([key])
        return createonly.CreateOnlyProbe(put=put, multipart=multipart)

    def _probe_outcome(self, key: str, second_write: Callable[[], Any]) -> str:
        try:
            second_write()
        except (ClientError, BotoCoreError) as e:
            mapped = self._error("probe", key, e)
            if isinstance(mapped, Conflict):
                return createonly.REFUSED
            if isinstance(mapped, RepositoryUnavailable) and s3client.retryable(e):
                raise mapped from e  # the store is down, which says nothing about conditional writes
            return createonly.ERROR_PREFIX + str(mapped).split(": ", 1)[-1]
        return createonly.IGNORED

    # --- reading ------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        r = self._call("open", key, self.client.get_object, Bucket=self.bucket, Key=self._name(key))
        return io.BufferedReader(
            s3client.BodyReader(r["Body"], lambda e: self._error("read", key, e)), buffer_size=256 * 1024
        )

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            r = self._call("stat", key, self.client.head_object, Bucket=self.bucket, Key=self._name(key))
        except NotFound:
            return None
        return ObjectInfo(
            key=key,
            size=r["ContentLength"],
            mtime=r["LastModified"].timestamp(),
            metadata={k: v for k, v in r.get("Metadata", {}).items() if k != WRITE_ID},
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._base + prefix, PaginationConfig={"PageSize": self.list_page_size}
        )
        cut = len(self._base)
        listed, pages_read, last = 0, 0, ""
        try:
            for page in pages:  # S3 lists in UTF-8 byte order, which is the contract's order
                pages_read += 1
                for obj in page.get("Contents", []):
                    if obj["Key"][cut:] <= last and listed:  # code point order is UTF-8 byte order
                        raise s3client.out_of_order(object_url(self.url, prefix), last, obj["Key"][cut:])
                    last = obj["Key"][cut:]
                    listed += 1
                    if obj["Key"].endswith("/"):
                        continue  # "folder" placeholders made by consoles are not objects
                    yield ObjectInfo(key=last, size=obj["Size"], mtime=obj["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as e:
            # past the first page the caller has seen part of the listing: say how far it got
            so_far = f"page {pages_read + 1}, after {listed} keys listed up to {last!r}" if pages_read else ""
            raise self._error("list", prefix, e, detail=so_far) from e

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
        return s3client.map_error(doing, where, self.bucket, e)
