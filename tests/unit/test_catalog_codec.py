"""ops.codec: settings -> storage (read-only unless asked), codec and keyring."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsdb.config import Settings
from opsdb.errors import KeyFileError, UsageError
from opsdb.ops.codec import codec_from_settings, keyring_from_settings, open_repository, repository
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
