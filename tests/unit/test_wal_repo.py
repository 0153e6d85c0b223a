"""repo/wal.py and ops/wal/push_fetch.py against real doubles: MemoryStorage / LocalStorage and the real envelope."""

import os

import pytest

from opsdb.errors import Conflict, IntegrityError, NotFound, RepositoryUnavailable, UsageError
from opsdb.ops.wal import push_fetch as ops_wal
from opsdb.repo import layout, marker
from opsdb.repo import wal as repo_wal
from opsdb.repo.envelope import Codec, put_object, read_header
from opsdb.storage.local import LocalStorage
from opsdb.storage.memory import MemoryStorage
from opsdb.stream.crypto import EncryptionKey
from tests.fakes import wal_segment

SEG = "000000010000000000000003"


@pytest.fixture
def key():
    return EncryptionKey.from_secret(bytes(range(32)))


@pytest.fixture
def repo(key):
    return ops_wal.WalRepo(MemoryStorage(), "main", Codec("zstd", 1, key=key), {key.id: key})


def wal_file(tmp_path, name=SEG, content=None):
    path = tmp_path / "pg_wal" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content if name.endswith(".history") else wal_segment(name, content))
    return path


def test_push_then_fetch_roundtrip(repo, tmp_path):
    src = wal_file(tmp_path)
    result = ops_wal.push_file(repo, str(src))
    assert not result.already_stored and result.size == src.stat().st_size
    stored = repo.storage.open(layout.wal_object("main", SEG)).read()
    assert src.read_bytes()[:4096] not in stored  # encrypted, not plaintext
    dest = tmp_path / "RECOVERYXLOG"
    fetched = ops_wal.fetch_file(repo, SEG, str(dest))
    assert dest.read_bytes() == src.read_bytes() and fetched.size == result.size
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_push_same_content_twice_succeeds(repo, tmp_path):
    src = wal_file(tmp_path)
    ops_wal.push_file(repo, str(src))
    again = ops_wal.push_file(repo, str(src))
    assert again.already_stored


def test_a_pushed_segment_is_digested_by_its_compressed_bytes_and_still_compared_by_content(repo, tmp_path):
    """SHA-256 over the ~0.5 MB compressed rather than the 16 MiB plaintext; a repeated push still
    compares plaintexts (read back), and a legacy plaintext-digest object reads and compares as before."""
    src = wal_file(tmp_path, content=b"x" * 300_000)
    first = ops_wal.push_file(repo, str(src))
    key = layout.wal_object("main", SEG)
    assert first.digest_of == "compressed" == read_header(repo.storage, key).digest_of
    again = ops_wal.push_file(repo, str(src))
    assert again.already_stored and again.digest_of == "plaintext"
    src.write_bytes(wal_segment(SEG, b"y" * 300_000))
    with pytest.raises(Conflict):
        ops_wal.push_file(repo, str(src))
    legacy = wal_file(tmp_path, "000000010000000000000004", b"z" * 300_000)
    put_object(repo.storage, layout.wal_object("main", legacy.name), [legacy.read_bytes()], repo.codec, bind=False)
    assert read_header(repo.storage, layout.wal_object("main", legacy.name)).digest_of == "plaintext"
    assert ops_wal.push_file(repo, str(legacy)).already_stored
    ops_wal.fetch_file(repo, legacy.name, str(tmp_path / "RECOVERYXLOG"))
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == legacy.read_bytes()


def test_push_different_content_conflicts_and_keeps_the_original(repo, tmp_path):
    src = wal_file(tmp_path, content=b"a" * 70000)
    ops_wal.push_file(repo, str(src))
    before = repo.storage.open(layout.wal_object("main", SEG)).read()
    src.write_bytes(wal_segment(SEG, b"b" * 70000))
    with pytest.raises(Conflict, match="different content"):
        ops_wal.push_file(repo, str(src))
    assert repo.storage.open(layout.wal_object("main", SEG)).read() == before


@pytest.mark.parametrize("name", ["00000002.history", SEG + ".partial", "000000010000000000000002.00000028.backup"])
def test_push_side_files(repo, tmp_path, name):
    src = wal_file(tmp_path, name, b"1\t0/3000000\tno recovery target specified\n")
    ops_wal.push_file(repo, str(src))
    dest = tmp_path / "out"
    ops_wal.fetch_file(repo, name, str(dest))
    assert dest.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("name", ["../etc/passwd", "RECOVERYXLOG", "0000000100000000000000", "x.history"])
def test_bad_names_refused(repo, tmp_path, name):
    with pytest.raises(UsageError):
        ops_wal.fetch_file(repo, name, str(tmp_path / "x"))


def test_fetch_missing_is_not_found_only_in_a_proven_archive(repo, tmp_path):
    with pytest.raises(marker.RepositoryMissing, match="no opsdb repository at memory://"):
        ops_wal.fetch_file(repo, SEG, str(tmp_path / "dest"))  # an empty repository proves nothing
    ops_wal.push_file(repo, str(wal_file(tmp_path, "000000010000000000000002")))  # writes the cluster marker
    with pytest.raises(NotFound):
        ops_wal.fetch_file(repo, SEG, str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_fetch_tampered_is_integrity_error_and_writes_nothing(tmp_path, key):
    storage = LocalStorage(str(tmp_path / "repo"))
    repo = ops_wal.WalRepo(storage, "main", Codec("zstd", 1, key=key), {key.id: key})
    src = wal_file(tmp_path)
    ops_wal.push_file(repo, str(src))
    obj = tmp_path / "repo" / layout.wal_object("main", SEG)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(obj, 0o600)
    obj.write_bytes(bytes(data))
    sleeps = []
    with pytest.raises(IntegrityError):
        ops_wal.fetch_file(repo, SEG, str(tmp_path / "dest"), sleep=sleeps.append)
    assert not (tmp_path / "dest").exists() and len(sleeps) == ops_wal.FETCH_ATTEMPTS - 1


class _Unreachable(MemoryStorage):
    def open(self, key):
        raise RepositoryUnavailable("unable to read s3://b/x: connection refused")


def test_fetch_unreachable_retries_then_raises(tmp_path, key):
    repo = ops_wal.WalRepo(_Unreachable(), "main", Codec("zstd", 1, key=key), {})
    sleeps = []
    with pytest.raises(RepositoryUnavailable):
        ops_wal.fetch_file(repo, SEG, str(tmp_path / "dest"), sleep=sleeps.append)
    assert sleeps == [0.5, 1.0]


def test_scan_ranges_gaps_and_histories(repo, tmp_path):
    for segno in (1, 2, 3, 6, 7):
        ops_wal.push_file(repo, str(wal_file(tmp_path, f"0000000100000000000000{segno:02X}", b"x")))
    ops_wal.push_file(repo, str(wal_file(tmp_path, "000000020000000000000007", b"y")))
    ops_wal.push_file(repo, str(wal_file(tmp_path, "00000002.history", b"1\t0/7000100\tno recovery target\n")))
    scan = repo_wal.scan(repo.storage, "main", repo.keys)
    assert scan.timelines == [1, 2]
    assert scan.gaps(1) == [("000000010000000000000004", "000000010000000000000005", 2)]
    assert scan.gaps(2) == []
    assert scan.histories[2][0].parent_timeline == 1
    assert scan.latest_timeline() == 2


def test_conflicting_partial_is_kept_beside_and_never_blocks(repo, tmp_path):
    name = SEG + ".partial"
    src = wal_file(tmp_path, name, b"first promotion" * 100)
    ops_wal.push_file(repo, str(src))
    src.write_bytes(wal_segment(name, b"second promotion" * 100))
    result = ops_wal.push_file(repo, str(src))
    assert result.key.startswith(layout.wal_object("main", name) + ".")
    assert ops_wal.push_file(repo, str(src)).already_stored
    dest = tmp_path / "first"
    ops_wal.fetch_file(repo, name, str(dest))
    assert dest.read_bytes() == wal_segment(name, b"first promotion" * 100)


def test_wal_objects_are_compressed_single_threaded_whatever_backups_use(tmp_path):
    from opsdb.config import load_settings
    from opsdb.ops.common.codec import repository
    from opsdb.ops.wal.push_fetch import wal_repo_from_settings

    config = tmp_path / "opsdb.toml"
    config.write_text(
        f'[repository]\nurl = "file://{tmp_path}/repo"\n[encryption]\nrequired = false\n'
        '[clusters.main]\nconninfo = "host=/tmp"\n'
    )
    settings = load_settings(config)
    assert settings.compression.threads == 2  # the default: backups and dumps use zstd workers
    assert repository(settings, writable=True).codec.threads == 2
    assert wal_repo_from_settings(settings, "main", writable=True).codec.threads == 0


def _legacy_store(repo, name, data):
    """An object as releases before identity binding wrote it (envelope version 1)."""
    put_object(repo.storage, layout.wal_object(repo.cluster, name), [data], repo.codec, bind=False)


def _copy(repo, src_name, dst_name):
    """What an operator or a broken sync does: copy one stored object under another name."""
    data = repo.storage.open(layout.wal_object("main", src_name)).read()
    repo.storage.put(layout.wal_object("main", dst_name), [data])


def test_fetch_names_a_swapped_or_replayed_bound_object_by_both_identities(repo, tmp_path):
    older, newer = "000000010000000000000003", "000000010000000000000004"
    ops_wal.push_file(repo, str(wal_file(tmp_path, older)))
    _copy(repo, older, newer)
    with pytest.raises(IntegrityError, match=f"it is wal {older} of cluster 'main'.*expected wal {newer}"):
        ops_wal.fetch_file(repo, newer, str(tmp_path / "dest"), sleep=lambda s: None)
    assert not (tmp_path / "dest").exists()


def test_fetch_names_a_replayed_or_foreign_legacy_segment_by_its_page_header(repo, tmp_path):
    older, newer = "000000010000000000000003", "000000010000000000000004"
    ops_wal.push_file(repo, str(wal_file(tmp_path, "000000010000000000000002")))  # the cluster marker
    genuine = wal_segment(older)
    _legacy_store(repo, older, genuine)
    _legacy_store(repo, newer, genuine)  # an older segment under a newer name
    with pytest.raises(IntegrityError, match="holds the segment at 0/3000000, not 0/4000000"):
        ops_wal.fetch_file(repo, newer, str(tmp_path / "dest"), sleep=lambda s: None)
    assert not (tmp_path / "dest").exists()
    dest = tmp_path / "ok"
    ops_wal.fetch_file(repo, older, str(dest))  # the genuine legacy object still restores
    assert dest.read_bytes() == genuine
    foreign = "000000010000000000000005"
    _legacy_store(repo, foreign, wal_segment(foreign, system_identifier=99))
    with pytest.raises(IntegrityError, match="another cluster: system identifier 99"):
        ops_wal.fetch_file(repo, foreign, str(tmp_path / "dest"), sleep=lambda s: None)


def test_fetch_checks_a_legacy_history_file_against_its_timeline(repo, tmp_path):
    ops_wal.push_file(repo, str(wal_file(tmp_path)))
    _legacy_store(repo, "00000002.history", b"1\t0/5000100\tx\n2\t0/7000000\ty\n")  # 3's history as 2's
    with pytest.raises(IntegrityError, match="00000002.history names timeline 2 as a parent"):
        ops_wal.fetch_file(repo, "00000002.history", str(tmp_path / "dest"), sleep=lambda s: None)


def test_the_restoring_servers_pg_control_decides_the_identity(repo, tmp_path):
    ops_wal.push_file(repo, str(wal_file(tmp_path)))
    data_dir = tmp_path / "restore"
    (data_dir / "global").mkdir(parents=True)
    (data_dir / "pg_wal").mkdir()
    (data_dir / "global" / "pg_control").write_bytes((77).to_bytes(8, "little") + bytes(100))
    with pytest.raises(IntegrityError, match=r"expected wal 0+10+3 of cluster .main. \(system identifier 77\)"):
        ops_wal.fetch_file(repo, SEG, str(data_dir / "pg_wal" / "RECOVERYXLOG"), sleep=lambda s: None)
