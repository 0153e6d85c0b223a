"""TarExtractor: the push-based tar extraction restores use (large writes, data-filter checks)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from opsdb.errors import IntegrityError
from opsdb.ops.recovery.tarstream import TarExtractor, UnsafeTarMember


def _tar(*members: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes, mode: int = 0o644, mtime: int = 1_700_000_000) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = mode, mtime
    return info, data


def _entry(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o755
    return info, None


def _extract(data: bytes, dest, piece: int = 1 << 20) -> TarExtractor:
    ex = TarExtractor(dest)
    try:
        for i in range(0, len(data), piece):
            ex.feed(data[i : i + piece])
        ex.close()
    finally:
        ex.abort()
    return ex


@pytest.mark.parametrize("piece", [1, 7, 512, 513, 4096, 1 << 20], ids=lambda p: f"chunks-of-{p}")
def test_extracts_the_same_whatever_the_chunk_boundaries(tmp_path, piece):
    big = os.urandom(3 * 512 + 100)
    data = _tar(
        _entry("base", tarfile.DIRTYPE),
        _file("base/1/1259", big, 0o640),
        _file("empty", b""),
        _file("PG_VERSION", b"15\n"),
        _entry("pg_wal/link", tarfile.SYMTYPE, "../base"),
        _entry("hard", tarfile.LNKTYPE, "PG_VERSION"),
    )
    ex = _extract(data, tmp_path, piece)
    assert ex.ended and ex.members == 6
    assert (tmp_path / "base/1/1259").read_bytes() == big
    assert (tmp_path / "empty").read_bytes() == b""
    assert os.readlink(tmp_path / "pg_wal/link") == "../base"
    assert (tmp_path / "hard").read_bytes() == b"15\n"
    st = (tmp_path / "base/1/1259").stat()
    assert st.st_mode & 0o777 == 0o600  # owner-only, as the data filter plus PostgreSQL's modes
    assert st.st_mtime == 1_700_000_000
    assert (tmp_path / "base").stat().st_mode & 0o077 == 0


def test_existing_file_is_replaced_and_gets_the_members_mode(tmp_path):
    (tmp_path / "f").write_bytes(b"old contents, longer")
    os.chmod(tmp_path / "f", 0o666)
    _extract(_tar(_file("f", b"new", 0o600)), tmp_path)
    assert (tmp_path / "f").read_bytes() == b"new"
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_long_names_and_link_targets(tmp_path, fmt):
    name = "d/" + "x" * 150
    target = "y" * 120
    data = _tar(_file(target, b"t"), _file(name, b"long"), _entry("l" * 110, tarfile.SYMTYPE, target), fmt=fmt)
    _extract(data, tmp_path, 100)
    assert (tmp_path / name).read_bytes() == b"long"
    assert os.readlink(tmp_path / ("l" * 110)) == target


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_file("../evil", b"x"), "outside the destination"),
        (_file("a/../../evil", b"x"), "outside the destination"),
        (_file("/abs/evil", b"x"), "absolute path"),
        (_entry("pg_wal", tarfile.SYMTYPE, "/etc"), "links outside"),
        (_entry("up", tarfile.SYMTYPE, "../../outside"), "links outside"),
        (_entry("hard", tarfile.LNKTYPE, "../outside"), "links outside"),
        (_entry("pipe", tarfile.FIFOTYPE), "special file"),
        (_entry("dev", tarfile.CHRTYPE), "special file"),
        (_entry("blk", tarfile.BLKTYPE), "special file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "abs-symlink", "rel-symlink-out", "hardlink-out", "fifo", "chr", "blk"],
)
def test_refuses_unsafe_members_before_writing_them(tmp_path, member, message):
    dest = tmp_path / "restore"
    dest.mkdir()
    with pytest.raises(UnsafeTarMember, match=message):
        _extract(_tar(member), dest)
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "outside").exists()
    assert os.listdir(dest) == []


def test_refuses_writing_through_a_symlink_that_leads_out(tmp_path):
    """A link inside that points at a directory inside is fine; one chained out of the tree is not."""
    dest = tmp_path / "restore"
    dest.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink("../outside", dest / "sneaky")  # already there (e.g. left by a previous member)
    with pytest.raises(UnsafeTarMember, match="outside the destination"):
        _extract(_tar(_file("sneaky/evil", b"x")), dest)
    assert os.listdir(tmp_path / "outside") == []
    data = _tar(_entry("sub", tarfile.DIRTYPE), _entry("alias", tarfile.SYMTYPE, "sub"), _file("alias/f", b"ok"))
    _extract(data, dest)
    assert (dest / "sub/f").read_bytes() == b"ok"


def test_truncated_and_corrupt_streams(tmp_path):
    data = _tar(_file("f", b"x" * 2000))
    with pytest.raises(IntegrityError, match="truncated"):
        _extract(data[:1000], tmp_path / "a")
    with pytest.raises(IntegrityError, match="truncated"):
        _extract(data[:300], tmp_path / "b")
    bad = bytearray(data)
    bad[148:156] = b"0000000\0"  # header checksum
    with pytest.raises(IntegrityError, match="corrupt"):
        _extract(bytes(bad), tmp_path / "c")


def test_everything_after_the_end_marker_is_ignored(tmp_path):
    data = _tar(_file("f", b"x")) + b"garbage after the archive"
    ex = _extract(data, tmp_path)
    assert ex.ended and (tmp_path / "f").read_bytes() == b"x"
