"""ops.common.codec: settings -> storage (read-only unless asked), codec and keyring."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsdb.config import Settings
from opsdb.errors import KeyFileError, UsageError
from opsdb.ops.common.codec import codec_from_settings, keyring_from_settings, open_repository, repository
from opsdb.stream.crypto import generate_key_file


def settings(tmp_path: Path, **encryption: object) -> Settings:
    return Settings(
        repository={"url": f"file://{tmp_path / 'repo'}"},
        compression={"algorithm": "gzip", "level": 6},
        encryption=encryption,
    )


def test_plain_repository(tmp_path: Path) -> None:
    s = settings(tmp_path)
    codec = codec_from_settings(s)
    assert (codec.compression, codec.level, codec.key, codec.require_encryption) == ("gzip", 6, None, False)
    assert keyring_from_settings(s) == {}
    with pytest.raises(UsageError):
        open_repository(s).put("x", [b"y"])  # read-only by default
    open_repository(s, writable=True).put("x", [b"y"])
    assert (tmp_path / "repo" / "x").read_bytes() == b"y"


def test_encrypted_repository(tmp_path: Path) -> None:
    key = generate_key_file(tmp_path / "k")
    repo = repository(settings(tmp_path, key_file=str(tmp_path / "k"), required=True), writable=True)
    assert repo.codec.key is not None and repo.codec.key.id == key.id and repo.codec.require_encryption
    assert list(repo.keys) == [key.id]
    with pytest.raises(KeyFileError):
        repository(settings(tmp_path, key_file=str(tmp_path / "missing")))


def test_keyring_reads_objects_of_older_keys_and_writes_with_the_new_one(tmp_path: Path) -> None:
    from opsdb.repo import envelope

    old = generate_key_file(tmp_path / "old.key")
    repo_old = repository(settings(tmp_path, key_file=str(tmp_path / "old.key")), writable=True)
    envelope.put_object(repo_old.storage, "a", [b"written with the old key"], repo_old.codec)
    new = generate_key_file(tmp_path / "new.key")
    rotated = settings(tmp_path, key_file=str(tmp_path / "new.key"), read_key_files=[str(tmp_path / "old.key")])
    repo = repository(rotated, writable=True)
    assert repo.codec.key is not None and repo.codec.key.id == new.id
    assert set(repo.keys) == {old.id, new.id}
    envelope.put_object(repo.storage, "b", [b"written with the new key"], repo.codec)
    assert b"".join(envelope.get_object(repo.storage, "a", repo.keys)) == b"written with the old key"
    assert envelope.verify_object(repo.storage, "b", repo.keys).key_id == new.id


def test_a_missing_key_names_its_id_and_never_suggests_generating_one(tmp_path: Path) -> None:
    from opsdb.errors import IntegrityError
    from opsdb.repo import envelope

    old = generate_key_file(tmp_path / "old.key")
    repo_old = repository(settings(tmp_path, key_file=str(tmp_path / "old.key")), writable=True)
    envelope.put_object(repo_old.storage, "a", [b"x"], repo_old.codec)
    generate_key_file(tmp_path / "new.key")
    repo = repository(settings(tmp_path, key_file=str(tmp_path / "new.key")))
    with pytest.raises(IntegrityError) as info:
        b"".join(envelope.get_object(repo.storage, "a", repo.keys))
    assert old.id in str(info.value) and "read_key_files" in (info.value.hint or "")
    assert "key generate" not in (info.value.hint or "")
    (tmp_path / "old.key").unlink()
    for missing in (
        {"key_file": str(tmp_path / "new.key"), "read_key_files": [str(tmp_path / "old.key")]},
        {"key_file": str(tmp_path / "old.key")},
    ):
        with pytest.raises(KeyFileError) as read_info:
            repository(settings(tmp_path, **missing))
        assert "old.key does not exist" in str(read_info.value) and "key generate" not in (read_info.value.hint or "")
    with pytest.raises(KeyFileError) as write_info:  # setting up a writer: generating one is the answer
        repository(settings(tmp_path, key_file=str(tmp_path / "old.key")), writable=True)
    assert "key generate" in (write_info.value.hint or "")
