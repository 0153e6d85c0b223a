"""Push-based, guarded extraction of a tar stream into a directory, written in large pieces.

Restores spend their CPU here, so this does not go through tarfile's member copy (16 KiB reads
through stream-mode buffers that copy every piece twice): `feed()` takes the plaintext chunks as
they arrive (about 1 MiB each) and writes the file data straight out of them with os.write on
memoryview slices, so a chunk costs a handful of Python calls and no copies. tarfile is still
what parses each 512-byte header (TarInfo.frombuf: checksums, base-256 sizes).

pg_basebackup writes plain ustar; pax ("x"/"g") and GNU long-name ("L"/"K") headers are read too,
so tars written by other tools work. Every member is checked the way tarfile's "data" filter
would (Debian 12's Python 3.11.2 has no filters): absolute names, names leaving the destination,
links pointing outside it, and device files and FIFOs are refused with UnsafeTarMember before
anything of that member is written. Regular files are created owner-only (mode & 0o700) with their
mtime; directories 0o700. Ownership is left to the caller (restore chowns the whole tree).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from opsdb.errors import IntegrityError

BLOCK = tarfile.BLOCKSIZE  # 512
_ZERO_BLOCK = bytes(BLOCK)
_MAX_EXTENDED = 1024 * 1024  # pax / GNU long-name payloads larger than this are refused, not buffered
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeTarMember(Exception):
    """A member the extraction refuses; nothing of it was written."""


class TarExtractor:
    """Feed it the tar stream chunk by chunk; close() checks that the stream ended cleanly."""

    def __init__(self, dest: Path | str) -> None:
        self.root = os.path.realpath(dest)
        self.members = 0
        self.ended = False  # the end-of-archive marker was seen; what follows is padding
        self._header = bytearray()
        self._fd = -1  # the regular file being written
        self._mtime = 0
        self._left = 0  # bytes of the current member's data still to come
        self._pad = 0  # padding after it, skipped
        self._extended: bytearray | None = None  # payload of a pax / long-name header being collected
        self._extended_type = b""
        self._overrides: dict[str, str] = {}  # from the last pax / long-name header, for the next member
        self._known_dirs: set[str] = set()  # made or seen, so each costs one makedirs

    # --- the stream ---------------------------------------------------------------------------

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk)
        pos, end = 0, len(view)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                self._data(view[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._member_done()
            elif self._pad:
                take = min(self._pad, end - pos)
                pos += take
                self._pad -= take
            elif self.ended:
                return  # zero padding up to the record size (and any further end blocks)
            else:
                take = min(BLOCK - len(self._header), end - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) == BLOCK:
                    block = bytes(self._header)
                    self._header.clear()
                    self._next_header(block)

    def close(self) -> None:
        """Finish: raises IntegrityError when the stream stopped inside a member or header."""
        inside = self._left or self._header or self._extended is not None
        self.abort()
        if inside:
            raise IntegrityError("tar stream is truncated: it ends inside a member")

    def abort(self) -> None:
        """Release the file being written, if any (after an error)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # --- members ------------------------------------------------------------------------------

    def _next_header(self, block: bytes) -> None:
        if block == _ZERO_BLOCK:
            self.ended = True  # as tarfile: the first zero block ends the archive
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise IntegrityError(f"tar stream is corrupt: {exc}") from None
        size = info.size
        self._pad = -size % BLOCK
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if size > _MAX_EXTENDED:
                raise IntegrityError(f"tar stream is corrupt: extended header of {size} bytes")
            self._extended, self._extended_type = bytearray(), info.type
            self._left = size
            if not size:
                self._member_done()
            return
        self._apply_overrides(info)
        self.members += 1
        if info.type in _FILE_TYPES:
            self._left = size
            self._open_file(info)
            if not size:
                self._member_done()
            return
        self._pad = 0  # links and directories carry no data (a size field on them is ignored, as tar does)
        target = self._checked_path(info)
        if info.isdir():
            if not os.path.isdir(target):
                os.makedirs(target, 0o700, exist_ok=True)
            self._known_dirs.add(target)
        elif info.issym():
            self._check_link(info, os.path.dirname(target))
            self._make_parent(target)
            os.symlink(info.linkname, target)
        elif info.islnk():
            source = self._check_link(info, self.root)
            self._make_parent(target)
            os.link(source, target, follow_symlinks=False)
        else:
            raise UnsafeTarMember(f"{info.name!r} is a special file (device or FIFO)")

    def _apply_overrides(self, info: tarfile.TarInfo) -> None:
        if not self._overrides:
            return
        if "path" in self._overrides:
            info.name = self._overrides["path"]
        if "linkpath" in self._overrides:
            info.linkname = self._overrides["linkpath"]
        if "size" in self._overrides:
            try:
                info.size = int(self._overrides["size"])
            except ValueError:
                raise IntegrityError("tar stream is corrupt: bad pax size") from None
            self._pad = -info.size % BLOCK
        self._overrides = {}

    def _data(self, piece: memoryview) -> None:
        if self._extended is not None:
            self._extended += piece
            return
        while piece:
            written = os.write(self._fd, piece)
            piece = piece[written:]

    def _member_done(self) -> None:
        if self._extended is not None:
            payload, kind = bytes(self._extended), self._extended_type
            self._extended = None
            self._read_extended(kind, payload)
        elif self._fd >= 0:
            os.utime(self._fd, (self._mtime, self._mtime))
            os.close(self._fd)
            self._fd = -1

    def _read_extended(self, kind: bytes, payload: bytes) -> None:
        if kind == tarfile.GNUTYPE_LONGNAME:
            self._overrides["path"] = _text(payload.split(b"\0", 1)[0])
        elif kind == tarfile.GNUTYPE_LONGLINK:
            self._overrides["linkpath"] = _text(payload.split(b"\0", 1)[0])
        elif kind == tarfile.XHDTYPE:
            self._overrides.update(_pax_records(payload))
        # XGLTYPE (global pax header): nothing in it changes where or what is extracted

    def _open_file(self, info: tarfile.TarInfo) -> None:
        target = self._checked_path(info)
        self._make_parent(target)
        try:
            self._fd = os.open(target, _OPEN_FLAGS, info.mode & 0o700)
        except IsADirectoryError:
            raise UnsafeTarMember(f"{info.name!r} is a file in the tar but a directory here") from None
        os.fchmod(self._fd, info.mode & 0o700)  # an existing file keeps its old mode through O_CREAT
        self._mtime = int(info.mtime)

    # --- checks -------------------------------------------------------------------------------

    def _checked_path(self, info: tarfile.TarInfo) -> str:
        name = info.name.rstrip("/")
        if os.path.isabs(name):
            raise UnsafeTarMember(f"{info.name!r} is an absolute path")
        if not name or name == ".":
            return self.root
        target = os.path.realpath(os.path.join(self.root, name))
        if not _inside(self.root, target):
            raise UnsafeTarMember(f"{info.name!r} would be extracted outside the destination")
        return target

    def _check_link(self, info: tarfile.TarInfo, base: str) -> str:
        link = info.linkname
        resolved = os.path.realpath(os.path.join(base, link))
        if not link or os.path.isabs(link) or not _inside(self.root, resolved):
            raise UnsafeTarMember(f"{info.name!r} links outside the destination")
        return resolved

    def _make_parent(self, target: str) -> None:
        parent = os.path.dirname(target)
        if parent not in self._known_dirs:
            os.makedirs(parent, 0o700, exist_ok=True)
            self._known_dirs.add(parent)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pax_records(payload: bytes) -> dict[str, str]:
    """pax extended header records: "<length> <key>=<value>\\n" each."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(payload):
        space = payload.find(b" ", pos)
        try:
            length = int(payload[pos:space])
        except ValueError:
            raise IntegrityError("tar stream is corrupt: bad pax header") from None
        if space < 0 or length <= 0 or pos + length > len(payload):
            raise IntegrityError("tar stream is corrupt: bad pax header")
        key, sep, value = payload[space + 1 : pos + length - 1].partition(b"=")
        if not sep:
            raise IntegrityError("tar stream is corrupt: bad pax header")
        records[_text(key)] = _text(value)
        pos += length
    return records
