"""The self-describing object envelope: every stored object says how to read it back.

The names the rest of opsdb uses, in one place. The parts, one job each:
  envelope_format  the header and trailer format (docstring there), and the types both sides share
  envelope_write   put_object / put_json: compress, encrypt and store a stream with its trailer
  envelope_read    get_object / get_json / verify_object / read_header: read back and check
"""

from __future__ import annotations

from opsdb.repo.envelope_format import (
    CIPHER,
    COMPRESSED_DIGEST,
    DIGEST_OF,
    ENVELOPE_VERSIONS,
    IDENTITY_BOUND,
    MAGIC,
    METADATA_DIGEST_LIMIT,
    PLAINTEXT_DIGEST,
    TRAILER_MAGIC,
    TRAILER_SIZE,
    TRAILER_SIZE_BOUND,
    Codec,
    EnvelopeHeader,
    Readback,
    StoredObject,
    check_identity,
    encode_header,
)
from opsdb.repo.envelope_read import get_json, get_object, read_header, verify_object
from opsdb.repo.envelope_write import put_json, put_object

__all__ = [
    "CIPHER",
    "COMPRESSED_DIGEST",
    "DIGEST_OF",
    "ENVELOPE_VERSIONS",
    "IDENTITY_BOUND",
    "MAGIC",
    "METADATA_DIGEST_LIMIT",
    "PLAINTEXT_DIGEST",
    "TRAILER_MAGIC",
    "TRAILER_SIZE",
    "TRAILER_SIZE_BOUND",
    "Codec",
    "EnvelopeHeader",
    "Readback",
    "StoredObject",
    "check_identity",
    "encode_header",
    "get_json",
    "get_object",
    "put_json",
    "put_object",
    "read_header",
    "verify_object",
]
