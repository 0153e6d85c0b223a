"""opsdb verify over an in-memory repository: every bad object is named with what is wrong."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tarfile
from typing import Any

import pytest

from opsdb.errors import NotFound
from opsdb.model.lsn import segment_name
from opsdb.ops.proof.verify import verify_repository
from opsdb.repo import layout
from opsdb.repo.envelope import Codec, put_object
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.crypto import EncryptionKey, key_id_of
from tests.fakes import TEST_SYSTEM_IDENTIFIER, wal_segment

SECRET = os.urandom(32)
KEY = EncryptionKey(key_id_of(SECRET), SECRET)
KEYS = {KEY.id: KEY}
CODEC = Codec(key=KEY)
SEG = 16 * 1024 * 1024


@dataclasses.dataclass
class Record:
    id: str
    start_lsn: str
    stop_lsn: str
    timeline: int = 1
    kind: str = "physical"
    status: str = "complete"
    objects: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def make_manifest(files: dict[str, bytes], algorithm: str = "SHA256") -> bytes:
    entries = []
    for path, data in files.items():
        entry = {"Path": path, "Size": len(data), "Last-Modified": "2026-11-21 09:00:00 GMT"}
        if algorithm == "SHA256":
            entry |= {"Checksum-Algorithm": "SHA256", "Checksum": hashlib.sha256(data).hexdigest()}
        else:
            entry |= {"Checksum-Algorithm": "CRC32C", "Checksum": "00000000"}
        entries.append(json.dumps(entry))
    body = '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n' + ",\n".join(entries) + " ],\n"
    body += '"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n],\n'
    checksum = hashlib.sha256(body.encode()).hexdigest()
    return (body + f'"Manifest-Checksum": "{checksum}"}}\n').encode()


def make_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


FILES = {
    "backup_label": b"START WAL LOCATION: 0/2000028\n",
    "global/1262": os.urandom(20000),
    "base/1/1259": b"x" * 9000,
}


def build_repo(
    *,
    manifest_files: dict[str, bytes] | None = None,
    algorithm: str = "SHA256",
    plaintext_digest: bool = False,
    bind: bool = True,
) -> tuple[MemoryStorage, Record]:
    """A backup as opsdb writes it (envelope version 2: digests of the compressed bytes; version 1
    with plaintext_digest=True, as before version 2 existed), its manifest and WAL 2-5."""
    storage = MemoryStorage()
    record = Record("20261121T090000Z", "0/2000028", "0/3000100")
    objects = {"base.tar": make_tar(FILES), "backup_manifest": make_manifest(manifest_files or FILES, algorithm)}
    for name, data in objects.items():
        key = layout.backup_object("main", record.id, name)
        stored = put_object(storage, key, [data], CODEC, plaintext_digest=plaintext_digest, bind=bind)
        record.objects.append(
            {"name": name, "size": stored.size, "sha256": stored.sha256, "sha256_of": stored.digest_of}
        )
    entry = json.dumps({"id": record.id}).encode()
    put_object(storage, layout.catalog_entry("main", record.id), [entry], CODEC, bind=bind)
    for segno in range(2, 6):  # 000000010000000000000002 .. 05
        name = segment_name(1, segno)
        put_object(storage, layout.wal_object("main", name), [wal_segment(name, size=4096)], CODEC, bind=bind)
    return storage, record


def flip_byte(storage: MemoryStorage, key: str, offset: int = -100) -> None:
    data = bytearray(storage.open(key).read())
    data[offset] ^= 0x01
    storage.put(key, [bytes(data)])


def test_clean_repository_passes_with_a_summary() -> None:
    storage, record = build_repo()
    result = verify_repository(storage, "main", KEYS, [record])
    assert result.ok, result.problems
    assert result.objects == 7 and result.backups == 1 and result.wal_segments == 4
    assert result.manifest_files == 3
    assert result.to_dict()["result"] == "pass"


def test_a_repository_written_with_plaintext_digests_still_verifies() -> None:
    storage, record = build_repo(plaintext_digest=True)
    assert {o["sha256_of"] for o in record.objects} == {"plaintext"}
    result = verify_repository(storage, "main", KEYS, [record])
    assert result.ok, result.problems
    assert result.objects == 7 and result.manifest_files == 3


def test_a_backup_object_replaced_by_another_valid_one_is_named_by_its_digest() -> None:
    """Authentic, intact, same size, but not the object the catalog recorded."""
    storage, record = build_repo()
    assert {o["sha256_of"] for o in record.objects} == {"compressed"}
    tar_key = layout.backup_object("main", record.id, "base.tar")
    other = make_tar(FILES | {"global/1262": os.urandom(20000)})
    storage.delete([tar_key])
    put_object(storage, tar_key, [other], CODEC, plaintext_digest=False)
    result = verify_repository(storage, "main", KEYS, [record])
    named = {p.key: p.what for p in result.problems}
    assert named[tar_key].startswith("sha256 ") and "differs from the catalog's" in named[tar_key]


def test_an_object_rewritten_with_the_other_digest_kind_is_named() -> None:
    """Same plaintext, written again as envelope version 1: intact, but not what the catalog recorded."""
    storage, record = build_repo()
    tar_key = layout.backup_object("main", record.id, "base.tar")
    storage.delete([tar_key])
    put_object(storage, tar_key, [make_tar(FILES)], CODEC)  # version 1: a plaintext digest
    result = verify_repository(storage, "main", KEYS, [record])
    named = {p.key: p.what for p in result.problems}
    assert named == {
        tar_key: "carries a digest of its plaintext bytes where the catalog recorded one of the compressed "
        "bytes: not the object this backup stored"
    }


def test_flipped_byte_in_backup_object_and_in_wal_object_are_each_named() -> None:
    storage, record = build_repo()
    tar_key = layout.backup_object("main", record.id, "base.tar")
    wal_key = layout.wal_object("main", segment_name(1, 4))
    flip_byte(storage, tar_key)
    flip_byte(storage, wal_key)
    result = verify_repository(storage, "main", KEYS, [record])
    assert not result.ok
    named = {p.key: p.what for p in result.problems}
    assert tar_key in named and wal_key in named, named
    assert "authentication" in named[wal_key] or "corrupt" in named[wal_key]


def test_flipped_byte_in_unencrypted_object_is_caught_by_the_digest() -> None:
    storage = MemoryStorage()
    key = layout.wal_object("main", segment_name(1, 2))
    put_object(storage, key, [os.urandom(50000)], Codec(compression="none"))
    flip_byte(storage, key, offset=200)
    result = verify_repository(storage, "main", {}, [])
    assert [p.key for p in result.problems] == [key]


def test_missing_wal_segment_breaks_continuity() -> None:
    storage, record = build_repo()
    gone = layout.wal_object("main", segment_name(1, 4))
    storage.delete([gone])
    result = verify_repository(storage, "main", KEYS, [record])
    assert [p.key for p in result.problems] == [gone]
    assert "missing WAL segment" in result.problems[0].what and "000000010000000000000005" in result.problems[0].what


def test_one_backup_checks_the_wal_it_needs() -> None:
    storage, record = build_repo()
    storage.delete([layout.wal_object("main", segment_name(1, 3))])  # needed up to the stop LSN 0/3000100
    result = verify_repository(storage, "main", KEYS, [record], backup_id=record.id)
    assert any("cannot reach consistency" in p.what for p in result.problems)
    with pytest.raises(NotFound):
        verify_repository(storage, "main", KEYS, [record], backup_id="nope")


def test_catalog_object_missing_is_named() -> None:
    storage, record = build_repo()
    key = layout.backup_object("main", record.id, "backup_manifest")
    storage.delete([key])
    result = verify_repository(storage, "main", KEYS, [record])
    assert [(p.key, p.what.split(":")[0]) for p in result.problems] == [(key, "missing")]


def test_manifest_disagreeing_with_the_tar_is_named() -> None:
    files = dict(FILES)
    files["base/1/1259"] = b"y" * 9000  # same size, other content
    files["base/1/2619"] = b"z"  # listed but not in the tar
    storage, record = build_repo(manifest_files=files)
    result = verify_repository(storage, "main", KEYS, [record])
    whats = {p.key.rsplit("/", 1)[-1]: p.what for p in result.problems}
    assert "checksum differs" in whats["1259"]
    assert whats["2619"].startswith("missing: listed in backup_manifest")


def test_crc32c_manifest_checks_names_and_sizes() -> None:
    storage, record = build_repo(algorithm="CRC32C")
    assert verify_repository(storage, "main", KEYS, [record]).ok


def test_tampered_manifest_checksum_is_named() -> None:
    storage, record = build_repo()
    key = layout.backup_object("main", record.id, "backup_manifest")
    data = bytearray(make_manifest(FILES))
    data[data.index(b'"Size": ') + 8] = ord("7")
    storage.delete([key])
    put = put_object(storage, key, [bytes(data)], CODEC)  # rewritten by someone holding the key
    record.objects = [
        o | {"size": put.size, "sha256": put.sha256} if o["name"] == "backup_manifest" else o for o in record.objects
    ]
    result = verify_repository(storage, "main", KEYS, [record])
    assert any(p.key == key and "checksum does not match" in p.what for p in result.problems)


class _KilledAfterObjects:
    """A storage through which a retention run is killed after it deleted a backup's objects,
    before it removed its marker (everything else passes through to the real storage)."""

    def __init__(self, inner: MemoryStorage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def delete(self, keys: Any) -> None:
        keys = list(keys)
        if any("/deleting/" in k for k in keys):
            raise KeyboardInterrupt("killed")
        self.inner.delete(keys)


def test_an_interrupted_retention_run_is_reported_as_such_not_as_a_bad_object() -> None:
    from datetime import UTC, datetime

    from opsdb.model.retention import Decision
    from opsdb.ops.retention.apply import delete_backup, resume

    storage, record = build_repo()
    killed: Any = _KilledAfterObjects(storage)
    old = "20261120T090000Z"
    put_object(storage, layout.backup_object("main", old, "base.tar"), [b"old"], CODEC)
    put_object(storage, layout.catalog_entry("main", old), [b"{}"], CODEC)
    now = datetime(2026, 11, 21, tzinfo=UTC)
    with pytest.raises(KeyboardInterrupt):
        delete_backup(killed, "main", Decision(old, False, ("expired",), now, now), "physical")
    assert [i.key for i in storage.list(layout.deleting_prefix("main"))]
    assert not list(storage.list(layout.backup_prefix("main", old)))

    result = verify_repository(storage, "main", KEYS, [record])
    assert result.ok, result.problems
    assert any(f"interrupted retention run: physical {old} was being deleted" in n for n in result.notes)
    assert not any("bad magic" in p.what for p in result.problems)

    resume(storage, "main")  # the next retention run finishes it; verify is then silent about it
    assert not any("interrupted" in n for n in verify_repository(storage, "main", KEYS, [record]).notes)


def test_a_stray_file_among_deletion_markers_is_named() -> None:
    storage, record = build_repo()
    storage.put(layout.deleting_marker("main", "20261120T090000Z"), [b"garbage"])
    result = verify_repository(storage, "main", KEYS, [record])
    assert [p.what for p in result.problems] == ["not a retention deletion marker (not JSON naming this id)"]


# --- swapped, replayed and foreign objects (bound ones by identity, older ones by content) ---------

W3, W4, W5 = (layout.wal_object("main", segment_name(1, n)) for n in (3, 4, 5))


def _swap(storage: MemoryStorage, a: str, b: str) -> None:
    da, db = storage.open(a).read(), storage.open(b).read()
    storage.put(a, [db])
    storage.put(b, [da])


def _problems(storage: MemoryStorage, record: Record) -> dict[str, str]:
    result = verify_repository(storage, "main", KEYS, [record])
    assert not result.ok and result.to_dict()["result"] == "fail"
    return {p.key: p.what for p in result.problems}


@pytest.mark.parametrize("bind", [True, False], ids=["bound", "legacy"])
def test_swapped_wal_objects_are_both_named(bind: bool) -> None:
    storage, record = build_repo(bind=bind)
    _swap(storage, W3, W4)
    problems = _problems(storage, record)
    assert set(problems) == {W3, W4}
    if bind:
        assert "it is wal 000000010000000000000004 of cluster 'main'" in problems[W3]
        assert "expected wal 000000010000000000000003" in problems[W3]
    else:
        assert "holds the segment at 0/4000000, not 0/3000000" in problems[W3]


@pytest.mark.parametrize("bind", [True, False], ids=["bound", "legacy"])
def test_an_older_segment_replayed_under_a_newer_name_is_named(bind: bool) -> None:
    storage, record = build_repo(bind=bind)
    storage.put(W5, [storage.open(W3).read()])
    problems = _problems(storage, record)
    assert list(problems) == [W5]
    assert ("wal 000000010000000000000003" if bind else "holds the segment at 0/3000000") in problems[W5]


@pytest.mark.parametrize("bind", [True, False], ids=["bound", "legacy"])
def test_a_segment_of_another_cluster_is_named_with_both_identifiers(bind: bool) -> None:
    storage, record = build_repo(bind=bind)
    from opsdb.repo import marker

    marker.ensure_cluster_marker(storage, "main", TEST_SYSTEM_IDENTIFIER, what="test")
    name = segment_name(1, 4)
    foreign = wal_segment(name, size=4096, system_identifier=4242)
    put_object(storage, W4, [foreign], Codec(key=KEY, system_identifier="4242"), bind=bind)
    problems = _problems(storage, record)
    assert list(problems) == [W4]
    assert "4242" in problems[W4] and str(TEST_SYSTEM_IDENTIFIER) in problems[W4]


@pytest.mark.parametrize("bind", [True, False], ids=["bound", "legacy"])
def test_a_catalog_entry_copied_under_another_id_is_named(bind: bool) -> None:
    storage, record = build_repo(bind=bind)
    copy = layout.catalog_entry("main", "20261122T090000Z")
    storage.put(copy, [storage.open(layout.catalog_entry("main", record.id)).read()])
    problems = _problems(storage, record)
    assert list(problems) == [copy]
    expected = "expected catalog 20261122T090000Z" if bind else "holds the catalog entry of backup '20261121T090000Z'"
    assert expected in problems[copy]


def test_objects_written_before_the_binding_are_noted() -> None:
    storage, record = build_repo(bind=False)
    result = verify_repository(storage, "main", KEYS, [record])
    assert result.ok, result.problems
    assert any("6 objects were written before objects were bound" in n for n in result.notes), result.notes
