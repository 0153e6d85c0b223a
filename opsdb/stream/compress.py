"""Compression stages: zstd (default), gzip and none. The only module that imports zstandard.

Every stage streams in bounded memory in both directions. Decoding never trusts the compressed
stream to be short: output is produced at most CHUNK_SIZE at a time (a 1 MiB zstd chunk of zero
pages can expand to gigabytes), and a stream that ends before its end marker, or carries bytes
after it, raises IntegrityError.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator

import zstandard

from opsdb.errors import IntegrityError, UsageError
from opsdb.stream.stages import CHUNK_SIZE, Stage

ALGORITHMS = ("zstd", "gzip", "none")
_GZIP_WBITS = 31  # zlib's gzip container: header, deflate data, CRC-32 and length trailer

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_MAX_BLOCK = 128 * 1024
_ZSTD_JOB_SIZE = CHUNK_SIZE
_ZSTD_OUT = CHUNK_SIZE // 4  # compressed pieces (and so cipher frames) of 256 KiB: less memory in flight


def compression_stage(algorithm: str, level: int, threads: int = 0) -> Stage:
    """The stage for `algorithm` ("zstd", "gzip" or "none"). threads > 0 lets zstd compress in
    that many worker threads (-1: one per CPU); gzip and none ignore it."""
    if algorithm == "zstd":
        if not 1 <= level <= 22:
            raise UsageError(f"compression.level {level} is out of range for zstd (1-22)")
        return ZstdStage(level, threads)
    if algorithm == "gzip":
        if not 1 <= level <= 9:
            raise UsageError(f"compression.level {level} is out of range for gzip (1-9)")
        return GzipStage(level)
    if algorithm == "none":
        return NoCompression()
    raise UsageError(f"unknown compression algorithm {algorithm!r} (choose one of: {', '.join(ALGORITHMS)})")


class NoCompression:
    """Passes bytes through unchanged."""

    name = "none"

    def encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        return iter(chunks)

    def decode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        return iter(chunks)


class GzipStage:
    """gzip (RFC 1952) via zlib; the gzip trailer's CRC-32 and length are checked on decode."""

    name = "gzip"

    def __init__(self, level: int) -> None:
        self.level = level

    def encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        comp = zlib.compressobj(self.level, zlib.DEFLATED, _GZIP_WBITS)
        for chunk in chunks:
            out = comp.compress(chunk)
            if out:
                yield out
        yield comp.flush()

    def decode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        dec = zlib.decompressobj(_GZIP_WBITS)
        try:
            for chunk in chunks:
                if dec.eof:
                    if chunk:
                        raise IntegrityError("stream is corrupt: data after the end of the gzip stream")
                    continue
                data: bytes = chunk
                while data and not dec.eof:
                    # max_length bounds the output of one call; the rest of the input waits in
                    # unconsumed_tail until the consumer has taken this piece.
                    out = dec.decompress(data, CHUNK_SIZE)
                    if out:
                        yield out
                    data = dec.unconsumed_tail
                if dec.eof and (data or dec.unused_data):
                    raise IntegrityError("stream is corrupt: data after the end of the gzip stream")
        except zlib.error as exc:
            raise IntegrityError(f"stream is corrupt: gzip: {exc}") from None
        if not dec.eof:
            raise IntegrityError("stream is truncated: the gzip stream ends before its trailer")


class ZstdStage:
    """One zstd frame with a content checksum, emitted in CHUNK_SIZE pieces.

    zstandard releases the GIL while compressing, so an uploader thread keeps sending the
    previous part meanwhile.
    """

    name = "zstd"

    def __init__(self, level: int, threads: int = 0) -> None:
        self.level = level
        self.threads = threads

    def encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        if self.threads:
            # zstd's default job for multithreading is several windows long and costs ~45 MB more
            # RSS at level 3; 1 MiB jobs keep it near +10 MB for most of the speed-up.
            params = zstandard.ZstdCompressionParameters.from_level(
                self.level, threads=self.threads, job_size=_ZSTD_JOB_SIZE, write_checksum=True
            )
            cctx = zstandard.ZstdCompressor(compression_params=params)
        else:
            cctx = zstandard.ZstdCompressor(level=self.level, write_checksum=True)
        chunker = cctx.chunker(chunk_size=_ZSTD_OUT)
        for chunk in chunks:
            yield from chunker.compress(chunk)
        yield from chunker.finish()  # type: ignore[no-untyped-call]  # zstandard's stubs leave finish() unannotated

    def decode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        walker = _ZstdFrameWalker()
        source = _WalkedSource(chunks, walker)
        dctx = zstandard.ZstdDecompressor()
        reader = dctx.stream_reader(
            source,  # type: ignore[arg-type]  # the stubs ask for IO[bytes]; zstandard calls only read()
            read_size=CHUNK_SIZE,
            read_across_frames=False,
            closefd=False,
        )
        try:
            while True:
                out = reader.read(CHUNK_SIZE)
                if not out:
                    break
                yield out
        except zstandard.ZstdError as exc:
            if walker.trailing:
                raise IntegrityError("stream is corrupt: data after the end of the zstd frame") from None
            raise IntegrityError(f"stream is corrupt: zstd: {exc}") from None
        source.drain()
        if walker.trailing:
            raise IntegrityError("stream is corrupt: data after the end of the zstd frame")
        if not walker.complete:
            raise IntegrityError("stream is truncated: the zstd frame ends before its last block")


class ZstdPassThrough:
    """A stream that is already zstd (pg_basebackup --compress=server-zstd), stored as it is.

    encode() yields the compressed bytes unchanged and decompresses them once on the side (about
    0.3 CPU-s per GB here, against ~1 s per GB to compress): that counts the plaintext for the
    envelope's trailer and proves, before the backup is committed, that the stream is exactly one
    whole zstd frame that decodes. The server writes no content checksum, so this check and the
    envelope's SHA-256 of the compressed bytes are what bind the plaintext (decompression is
    deterministic). decode() is ZstdStage's: the stored object is an ordinary zstd object.
    """

    name = "zstd"

    def __init__(self, on_plain: Callable[[int], None] | None = None) -> None:
        self.plain_size = 0
        self._on_plain = on_plain

    def write(self, data: bytes) -> int:  # the decompressor's sink: counts, never keeps, the plaintext
        self.plain_size += len(data)
        if self._on_plain is not None:
            self._on_plain(len(data))
        return len(data)

    def encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        walker = _ZstdFrameWalker()
        # 256 KiB of output at a time: measured faster than 1 MiB (it stays in the CPU's cache)
        writer = zstandard.ZstdDecompressor().stream_writer(
            self,  # type: ignore[arg-type]  # the stubs ask for IO[bytes]; zstandard calls only write()
            write_size=_ZSTD_OUT,
            write_return_read=True,
        )
        for chunk in chunks:
            walker.feed(chunk)
            if walker.trailing:
                raise IntegrityError("compressed stream is corrupt: data after the end of the zstd frame")
            try:
                writer.write(chunk)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"compressed stream is corrupt: zstd: {exc}") from None
            yield chunk
        if not walker.complete:
            raise IntegrityError("compressed stream is truncated: the zstd frame ends before its last block")

    def decode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        return ZstdStage(1).decode(chunks)


class _WalkedSource:
    """A read()-able view of a chunk iterator that shows every byte to a frame walker."""

    def __init__(self, chunks: Iterable[bytes], walker: _ZstdFrameWalker) -> None:
        self._it = iter(chunks)
        self._walker = walker
        self._chunk = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._chunk):
            for chunk in self._it:
                if chunk:
                    self._walker.feed(chunk)
                    self._chunk, self._pos = bytes(chunk), 0
                    break
            else:
                return b""
        start = self._pos
        end = len(self._chunk) if n < 0 else min(len(self._chunk), start + n)
        self._pos = end
        if start == 0 and end == len(self._chunk):
            return self._chunk  # the common case: hand over the whole chunk without a copy
        return self._chunk[start:end]

    def drain(self) -> None:
        for chunk in self._it:
            self._walker.feed(chunk)


class _ZstdFrameWalker:
    """Follows zstd's frame layout (RFC 8878) over the compressed bytes to know whether the frame
    ended, because zstandard's stream reader reports a cut-off stream as a clean end."""

    def __init__(self) -> None:
        self._field = bytearray()
        self._need = 4
        self._state = "magic"
        self._skip = 0
        self._checksum = False
        self.trailing = False

    @property
    def complete(self) -> bool:
        return self._state == "done" and self._skip == 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            if self._state == "done":
                self.trailing = True
                return
            take = min(self._need - len(self._field), n - i)
            self._field += view[i : i + take]
            i += take
            if len(self._field) == self._need:
                field = bytes(self._field)
                self._field.clear()
                self._advance(field)

    def _expect(self, state: str, need: int) -> None:
        self._state, self._need = state, need

    def _advance(self, field: bytes) -> None:
        if self._state == "magic":
            if field != _ZSTD_MAGIC:
                raise IntegrityError("stream is corrupt: not a zstd frame (bad magic number)")
            self._expect("descriptor", 1)
        elif self._state == "descriptor":
            d = field[0]
            if d & 0x08:
                raise IntegrityError("stream is corrupt: zstd frame header has the reserved bit set")
            single_segment = bool(d & 0x20)
            fcs_flag = d >> 6
            fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[d & 0x03] + fcs_size
            self._checksum = bool(d & 0x04)
            if rest:
                self._expect("header", rest)
            else:
                self._expect("block", 3)
        elif self._state == "header":
            self._expect("block", 3)
        elif self._state == "block":
            header = int.from_bytes(field, "little")
            last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
            if block_type == 3 or size > _ZSTD_MAX_BLOCK:
                raise IntegrityError("stream is corrupt: invalid zstd block header")
            self._skip = 1 if block_type == 1 else size  # an RLE block stores one byte
            if not last:
                self._expect("block", 3)
            elif self._checksum:
                self._expect("checksum", 4)
            else:
                self._expect("done", 0)
        elif self._state == "checksum":
            self._expect("done", 0)
