"""ops/walspool.py: an ok marker acknowledges only the file (or content) the pusher stored."""

import hashlib
import json
import os

from opsdb.ops.walspool import FetchSpool, PushSpool, file_identity, sha256_file, valid_name


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


def _published(tmp_path, content: bytes = b"w" * 4096):
    data_dir = tmp_path / "pgdata"
    data_dir.mkdir(exist_ok=True)
    spool = FetchSpool(str(tmp_path / "spool"), "main", str(data_dir), "s3://b/r").ensure()
    tmp = tmp_path / "spool" / "fetched.tmp"
    tmp.write_bytes(content)
    spool.publish("000000010000000000000007.history", str(tmp), hashlib.sha256(content).hexdigest(), len(content))
    return spool


def test_the_published_file_itself_is_moved_into_place_without_a_copy(tmp_path):
    spool = _published(tmp_path)
    src = tmp_path / "spool" / "main"
    dest = tmp_path / "RECOVERYXLOG"
    inode = os.stat(spool.data_path("000000010000000000000007.history")).st_ino
    assert spool.serve("000000010000000000000007.history", str(dest))
    assert dest.read_bytes() == b"w" * 4096 and os.stat(dest).st_ino == inode  # renamed, not copied
    assert not list(src.rglob("000000010000000000000007.history*"))  # nothing left to serve twice


def test_a_file_from_another_boot_is_served_only_if_its_digest_matches(tmp_path):
    spool = _published(tmp_path)
    meta = spool.data_path("000000010000000000000007.history.json")
    doc = json.loads(open(meta).read())
    doc["boot_id"] = "an-earlier-boot"
    open(meta, "w").write(json.dumps(doc))
    # same size, same inode, content damaged (as unsynced data after a crash might be)
    with open(spool.data_path("000000010000000000000007.history"), "r+b") as fh:
        fh.write(b"X")
    os.utime(spool.data_path("000000010000000000000007.history"), ns=(0, int(doc["identity"].split(":")[3])))
    assert not spool.serve("000000010000000000000007.history", str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()

    intact = _published(tmp_path)
    meta = intact.data_path("000000010000000000000007.history.json")
    doc = json.loads(open(meta).read())
    doc["boot_id"] = "an-earlier-boot"
    open(meta, "w").write(json.dumps(doc))
    assert intact.serve("000000010000000000000007.history", str(tmp_path / "dest"))  # verified copy
    assert (tmp_path / "dest").read_bytes() == b"w" * 4096


def test_a_file_changed_after_it_was_published_is_never_moved_into_place(tmp_path):
    spool = _published(tmp_path)
    with open(spool.data_path("000000010000000000000007.history"), "ab") as fh:
        fh.write(b"appended")
    assert not spool.serve("000000010000000000000007.history", str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_marker_of_a_file_that_changed_while_it_was_pushed_is_checked_by_content(tmp_path):
    spool = PushSpool(tmp_path / "spool", "main").ensure()
    f = tmp_path / "000000010000000000000001"
    f.write_bytes(b"segment")
    spool.write_ok(f.name, sha256_file(f)[0], 7, None)  # the pusher could not name the file it read
    assert spool.take_ok(f.name, str(f), {})


def test_a_marker_made_under_other_settings_is_refused(tmp_path, monkeypatch):
    from opsdb.ops.walspool import settings_fingerprint

    config = tmp_path / "opsdb.toml"
    config.write_text('[repository]\nurl = "file:///srv/a"\n')
    before = settings_fingerprint(str(config))
    spool = PushSpool(tmp_path / "spool", "main").ensure()
    f = tmp_path / "000000010000000000000001"
    f.write_bytes(b"a" * 100)
    spool.write_ok(f.name, sha256_file(f)[0], 100, file_identity(f), before)
    config.write_text('[repository]\nurl = "file:///srv/b"\n')  # the repository moved
    after = settings_fingerprint(str(config))
    assert after != before
    assert not spool.take_ok(f.name, str(f), {}, after)  # stored in A: not done for B
    assert not os.path.exists(os.path.join(spool.ok, f.name))  # consumed: the next push stores again
    spool.write_ok(f.name, sha256_file(f)[0], 100, file_identity(f), after)
    assert spool.take_ok(f.name, str(f), {}, after)
    monkeypatch.setenv("OPSDB_REPOSITORY__URL", "file:///srv/c")  # the environment counts too
    assert settings_fingerprint(str(config)) != after


def test_helpers_notice_a_key_rewritten_in_place_with_the_same_size_and_mtime(tmp_path):
    from opsdb.ops.walagent import files_changed

    key = tmp_path / "key"
    key.write_bytes(b"a" * 64)
    st = key.stat()
    changed = files_changed([str(key)])
    assert not changed()
    key.write_bytes(b"b" * 64)
    os.utime(key, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert changed()
