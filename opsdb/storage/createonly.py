"""Does the store honour create-only writes? The probe and its result (no boto3 here).

Every create-only write in opsdb (WAL segments, catalog entries, the repository marker, locks) relies
on put(if_absent=True) refusing an existing name. Local and memory storage do that by construction;
an S3-compatible store does it only if it honours `If-None-Match: *` on PutObject and on
CompleteMultipartUpload, and many (older MinIO, Ceph RGW, s3rver) silently ignore the header and
replace the object. So it is probed, not assumed: a second create-only write of one probe key must be
refused. The result is recorded in the repository marker and shown by `check`; the S3 driver uses its
guarded fallback wherever the store is not known to refuse (docs/storage.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from opsdb.errors import Conflict, IntegrityError, RepositoryUnavailable, UsageError
from opsdb.storage.base import Storage

REFUSED = "refused"  # the second create-only write failed and the first object stayed: honoured
IGNORED = "ignored"  # the second create-only write succeeded: the store replaced the object
NOT_APPLICABLE = "n/a"  # the driver has no such request (multipart on local or memory storage)
ERROR_PREFIX = "error: "  # the store rejected the conditional request itself (e.g. 501 NotImplemented)
CONDITIONAL_WRITE_POLICIES = ("fallback", "refuse")  # [repository] conditional_writes
PROBE_PREFIX = "probes/create-only-"  # probe keys, deleted right after (a leftover is harmless)


@dataclasses.dataclass(frozen=True)
class CreateOnlyProbe:
    """What the store did with a second create-only write of the same key, per request kind."""

    put: str  # PutObject with If-None-Match: * (or the driver's only put)
    multipart: str  # CompleteMultipartUpload with If-None-Match: *
    probed_at: str = ""  # ISO 8601, UTC; set by the caller that records the result

    @property
    def honoured(self) -> bool:
        """Every create-only request kind is refused by the store itself."""
        return self.put == REFUSED and self.multipart in (REFUSED, NOT_APPLICABLE)

    def refuses(self, request: str) -> bool:
        """request: "put" or "multipart"."""
        return getattr(self, request) in (REFUSED, NOT_APPLICABLE)

    def rejects_header(self, request: str) -> bool:
        """The store answers the conditional request with an error: send it without the header."""
        return str(getattr(self, request)).startswith(ERROR_PREFIX)

    def describe(self) -> str:
        """One line for `check` and error messages: what the store does, per request kind."""
        if self.honoured:
            return "conditional writes honoured: the store refuses a second create-only write"
        kinds = [f"{kind} {outcome}" for kind, outcome in (("PutObject", self.put), ("multipart", self.multipart))]
        return "conditional writes NOT honoured: If-None-Match: * " + ", ".join(kinds)

    def to_dict(self) -> dict[str, str]:
        return {"put": self.put, "multipart": self.multipart, "probed_at": self.probed_at}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CreateOnlyProbe:
        """Raises IntegrityError for a record that is not a probe result."""
        try:
            values = {f: str(doc[f]) for f in ("put", "multipart")}
        except (KeyError, TypeError):
            raise IntegrityError(f"not a conditional-write probe record: {dict(doc)!r}"[:300]) from None
        return cls(**values, probed_at=str(doc.get("probed_at", "")))


def probe_key() -> str:
    return PROBE_PREFIX + secrets.token_hex(8)


def probe_create_only(storage: Storage, key: str | None = None, probed_at: str = "") -> CreateOnlyProbe:
    """Write a probe key create-only twice; the second write must be refused and leave the first.

    The S3 driver probes its raw requests itself (its put() would answer from its own fallback);
    other drivers go through put(). The probe key is deleted afterwards."""
    key = key or probe_key()
    driver_probe: Callable[[str], CreateOnlyProbe] | None = getattr(storage, "probe_create_only", None)
    if driver_probe is not None:
        return dataclasses.replace(driver_probe(key), probed_at=probed_at)
    first = b"opsdb create-only probe: first write"
    storage.put(key, [first], if_absent=True)
    try:
        try:
            storage.put(key, [b"opsdb create-only probe: second write"], if_absent=True)
            outcome = IGNORED
        except Conflict:
            with storage.open(key) as fh:
                outcome = REFUSED if fh.read() == first else IGNORED
    finally:
        with contextlib.suppress(RepositoryUnavailable):  # a writer without delete rights: a harmless leftover
            storage.delete([key])
    return CreateOnlyProbe(put=outcome, multipart=NOT_APPLICABLE, probed_at=probed_at)


def check_policy(policy: str) -> str:
    if policy not in CONDITIONAL_WRITE_POLICIES:
        raise UsageError(
            f"invalid conditional_writes {policy!r}: expected one of {', '.join(CONDITIONAL_WRITE_POLICIES)}"
        )
    return policy
