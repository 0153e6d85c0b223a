"""Streaming tar extraction refuses unsafe members on every supported Python (with or without tarfile filters)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from opsdb.errors import IntegrityError
from opsdb.ops.recovery.extract import extract_object
from opsdb.repo.envelope import Codec, get_object, put_object
from opsdb.storage.memory import MemoryStorage


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _store(data: bytes) -> MemoryStorage:
    storage = MemoryStorage()
    put_object(storage, "b/base.tar", [data], Codec(compression="zstd"))
    return storage


def test_extracts_files_with_owner_only_modes(tmp_path):
    data = _tar(_file("PG_VERSION", b"15\n"), _file("base/1/1259", b"x" * 9000, 0o644))
    count = extract_object(_store(data), "b/base.tar", {}, tmp_path)
    assert count == len(data)
    assert (tmp_path / "PG_VERSION").read_bytes() == b"15\n"
    assert (tmp_path / "base/1/1259").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "member",
    [
        _file("../evil", b"x"),
        _file("a/../../evil", b"x"),
        _link("pg_wal", "/etc"),
        _link("up", "../../outside"),
        _link("hard", "../outside", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "abs-symlink", "rel-symlink-out", "hardlink-out"],
)
def test_refuses_members_escaping_the_destination(tmp_path, member):
    dest = tmp_path / "restore"
    dest.mkdir()
    with pytest.raises(IntegrityError, match="unsafe tar member"):
        extract_object(_store(_tar(member)), "b/base.tar", {}, dest)
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "outside").exists()


def test_refuses_special_files_and_keeps_links_inside(tmp_path):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(IntegrityError, match="special file"):
        extract_object(_store(_tar((fifo, None))), "b/base.tar", {}, tmp_path)
    ok = _link("pg_tblspc/16385", "../base")
    extract_object(_store(_tar(ok)), "b/base.tar", {}, tmp_path)  # stays inside: allowed
    assert os.readlink(tmp_path / "pg_tblspc/16385") == "../base"


def _flip_digest_byte(storage: MemoryStorage, key: str) -> None:
    with storage.open(key) as fh:
        raw = bytearray(fh.read())
    raw[-10] ^= 1  # inside the trailer's SHA-256
    storage.delete([key])
    storage.put(key, [bytes(raw)])


def test_tampered_object_fails_after_its_files_were_written(tmp_path):
    """Files are written as they stream; the object's digest is still checked at its end."""
    storage = _store(_tar(_file("f", b"x" * 100_000)))
    _flip_digest_byte(storage, "b/base.tar")
    with pytest.raises(IntegrityError, match="b/base.tar"):
        extract_object(storage, "b/base.tar", {}, tmp_path)


def test_absolute_names_never_land_outside(tmp_path):
    """Absolute names are refused (tarfile's data filter would strip the slash); nothing escapes."""
    dest = tmp_path / "restore"
    dest.mkdir()
    name = str(tmp_path / "evil")
    try:
        extract_object(_store(_tar(_file(name, b"x"))), "b/base.tar", {}, dest)
    except IntegrityError as exc:
        assert "absolute path" in str(exc)
    else:
        assert (dest / name.lstrip("/")).read_bytes() == b"x"
    assert not (tmp_path / "evil").exists()


def test_decode_ahead_reads_the_same_plaintext_and_still_checks_it():
    """get_object(decode_ahead=N) decodes on a worker thread; content, digest check and errors are unchanged."""
    storage = MemoryStorage()
    data = os.urandom(3 << 20) + bytes(5 << 20)
    put_object(storage, "b/base.tar", [data[i : i + 65536] for i in range(0, len(data), 65536)], Codec())
    assert b"".join(get_object(storage, "b/base.tar", {}, decode_ahead=2)) == data
    _flip_digest_byte(storage, "b/base.tar")
    with pytest.raises(IntegrityError, match="b/base.tar"):
        for _ in get_object(storage, "b/base.tar", {}, decode_ahead=2):
            pass
    early = get_object(storage, "b/base.tar", {}, decode_ahead=2)
    next(early)
    early.close()  # a consumer that stops early stops the worker too
