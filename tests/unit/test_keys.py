"""Key files: generate (0600, never overwrite), load (mode checks, malformed keys), key_env, and the CLI."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsdb.errors import KeyFileError
from opsdb.stream.crypto import generate_key_file, key_id_of, load_key
from tests.gate import missing


def test_generate_writes_0600_and_load_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "repo.key"
    key = generate_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key.secret) == 32 and key.id == key_id_of(key.secret)
    assert load_key(key_file=path) == key
    text = path.read_text()
    assert text.startswith("# opsdb encryption key v1") and key.secret.hex() in text


def test_generate_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "k"
        generate_key_file(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "repo.key"
    first = generate_key_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists; refusing to overwrite") as info:
        generate_key_file(path)
    assert info.value.exit_code == 2
    assert path.read_bytes() == before and load_key(key_file=path) == first


def test_generate_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(KeyFileError):
        generate_key_file(tmp_path / "link")
    assert not target.exists()


def test_two_keys_differ(tmp_path: Path) -> None:
    assert generate_key_file(tmp_path / "a").id != generate_key_file(tmp_path / "b").id


@pytest.mark.parametrize(
    "mode,word", [(0o644, "readable"), (0o640, "readable"), (0o604, "readable"), (0o620, "writable")]
)
def test_group_or_other_access_is_refused(tmp_path: Path, mode: int, word: str) -> None:
    path = tmp_path / "repo.key"
    generate_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        load_key(key_file=path)
    assert str(info.value) == f"key file {path} is {word} by group/others (mode {mode:04o}): chmod 600 {path}"


def test_0400_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "repo.key"
    key = generate_key_file(path)
    path.chmod(0o400)
    assert load_key(key_file=path) == key


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist") as info:
        load_key(key_file=tmp_path / "nope")
    assert "opsdb key generate" in (info.value.hint or "")


@pytest.mark.parametrize(
    "content",
    ["", "# only a comment\n", "abcd\n", "zz" * 32 + "\n", "00" * 31 + "\n", "00" * 32 + "\n" + "11" * 32 + "\n"],
)
def test_malformed_key_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="malformed"):
        load_key(key_file=path)


def test_key_env_hex_and_base64(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = generate_key_file(tmp_path / "k")
    monkeypatch.setenv("OPSDB_TEST_KEY", key.secret.hex())
    assert load_key(key_env="OPSDB_TEST_KEY") == key
    import base64

    monkeypatch.setenv("OPSDB_TEST_KEY", base64.b64encode(key.secret).decode())
    assert load_key(key_env="OPSDB_TEST_KEY") == key
    monkeypatch.setenv("OPSDB_TEST_KEY", (tmp_path / "k").read_text())  # the key file's text works too
    assert load_key(key_env="OPSDB_TEST_KEY") == key


def test_key_env_missing_or_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPSDB_TEST_KEY", raising=False)
    with pytest.raises(KeyFileError, match="OPSDB_TEST_KEY .* is not set"):
        load_key(key_env="OPSDB_TEST_KEY")
    monkeypatch.setenv("OPSDB_TEST_KEY", "not a key")
    with pytest.raises(KeyFileError, match="environment variable OPSDB_TEST_KEY is malformed"):
        load_key(key_env="OPSDB_TEST_KEY")


def test_no_source_or_both_sources(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no encryption key configured"):
        load_key()
    with pytest.raises(KeyFileError, match="only one"):
        load_key(key_file=tmp_path / "k", key_env="X")


def _opsdb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsdb", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_cli_key_generate(tmp_path: Path) -> None:
    path = tmp_path / "cli.key"
    done = _opsdb("--json", "key", "generate", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    me = pwd.getpwuid(os.geteuid()).pw_name
    readers = "root only" if me == "root" else f"{me} and root"
    assert doc == {"path": str(path), "key_id": load_key(key_file=path).id, "owner": me, "readable_by": readers}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(key_file=path).secret.hex() not in done.stdout + done.stderr

    again = _opsdb("--json", "key", "generate", str(path), cwd=tmp_path)
    assert again.returncode == 2 and json.loads(again.stdout)["exit_code"] == 2
    assert "already exists; refusing to overwrite" in again.stderr


needs_root = pytest.mark.root("giving a key to another user needs root")


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        missing(f"no {name!r} OS user here")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory under /tmp that other users may enter (pytest's tmp dirs are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="opsdb-keys-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_generate_as_root_gives_the_key_to_the_clusters_os_user(open_dir: Path) -> None:
    postgres = _user("postgres")
    tmp_path = open_dir
    config = tmp_path / "opsdb.toml"
    config.write_text('[clusters.main]\nos_user = "postgres"\n')
    path = tmp_path / "repo.key"
    done = _opsdb("--config", str(config), "key", "generate", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (postgres.pw_uid, postgres.pw_gid, 0o600)
    assert "owner postgres: readable by postgres and root" in done.stdout
    read = subprocess.run(
        ["runuser", "-u", "postgres", "--", sys.executable, "-c", f"import sys; print(open({str(path)!r}).read()[:8])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert read.returncode == 0, read.stderr


@needs_root
def test_generate_owner_option_and_its_mistakes(tmp_path: Path) -> None:
    nobody = _user("nobody")
    path = tmp_path / "n.key"
    done = _opsdb("--json", "key", "generate", "--owner", "nobody", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["readable_by"] == "nobody and root"
    assert path.stat().st_uid == nobody.pw_uid and stat.S_IMODE(path.stat().st_mode) == 0o600

    missing = tmp_path / "m.key"
    bad = _opsdb("key", "generate", "--owner", "no-such-user-xq", str(missing), cwd=tmp_path)
    assert bad.returncode == 2 and "--owner no-such-user-xq: no such user" in bad.stderr
    assert not missing.exists()


def test_generate_without_config_as_root_says_the_server_cannot_read_it(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    done = _opsdb("key", "generate", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    if os.geteuid() == 0:
        assert "readable by root only" in done.stdout and "--owner USER" in done.stdout
