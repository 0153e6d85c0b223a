"""ops/walspool.py: an ok marker acknowledges only the file (or content) the pusher stored."""

from opsdb.ops.walspool import PushSpool, file_identity, sha256_file, valid_name


def test_marker_for_the_same_file_is_accepted_without_hashing(tmp_path):
    spool = PushSpool(tmp_path / "spool", "main").ensure()
    f = tmp_path / "000000010000000000000001"
    f.write_bytes(b"a" * 1000)
    spool.write_ok(f.name, "not-the-digest", 1000, file_identity(f))
    digest: dict[str, str] = {}
    assert spool.take_ok(f.name, str(f), digest) and digest == {}  # identity matched, nothing read
    assert not spool.take_ok(f.name, str(f), digest)  # consumed


def test_stale_marker_from_another_file_is_refused(tmp_path):
    spool = PushSpool(tmp_path / "spool", "main").ensure()
    f = tmp_path / "000000010000000000000001"
    f.write_bytes(b"old cluster")
    spool.write_ok(f.name, sha256_file(f)[0], 11, "1:2:3:4")
    f.write_bytes(b"new cluster")  # same name, another incarnation
    assert not spool.take_ok(f.name, str(f), {})
    f.write_bytes(b"same content")
    spool.write_ok(f.name, sha256_file(f)[0], 12, "1:2:3:4")
    assert spool.take_ok(f.name, str(f), {})  # identity differs, but the content is what was stored


def test_names():
    assert valid_name("000000010000000000000001") and valid_name("00000002.history")
    assert valid_name("000000010000000000000001.partial")
    assert valid_name("000000010000000000000001.00000028.backup")
    assert not valid_name("../000000010000000000000001") and not valid_name("RECOVERYXLOG")
