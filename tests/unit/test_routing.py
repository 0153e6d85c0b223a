"""cli/routing.py: the routing keys of a lean WAL call, and their per-config cache."""

from __future__ import annotations

import os

import pytest

from opsdb.cli import routing

CONFIG = """
[repository]
url = "s3://bucket/repo"
[wal]
async = true
spool_dir = "{spool}"
[clusters.main]
conninfo = "host=/tmp"
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    for key in [k for k in os.environ if k.startswith("OPSDB_")]:
        monkeypatch.delenv(key)
    return runtime / f"opsdb-{os.geteuid()}"


def _config(tmp_path, spool="/s1"):
    path = tmp_path / "opsdb.toml"
    path.write_text(CONFIG.format(spool=spool))
    return path


def test_keys_are_read_then_served_from_the_cache(tmp_path, cache):
    config = _config(tmp_path)
    first = routing.read_routing(str(config), None)
    assert first is not None and first.async_ and first.cluster == "main" and first.spool_dir == "/s1"
    assert first.config_path == os.path.realpath(config)
    entries = list(cache.glob("routing-*"))
    assert len(entries) == 1 and oct(cache.stat().st_mode & 0o777) == "0o700"
    entries[0].write_text(entries[0].read_text().replace("=s:/s1", "=s:/from-cache"))
    assert routing.read_routing(str(config), None).spool_dir == "/from-cache"  # no parse: the cache answered


def test_an_edited_config_or_a_changed_environment_is_read_again(tmp_path, cache, monkeypatch):
    config = _config(tmp_path)
    assert routing.read_routing(str(config), None).spool_dir == "/s1"
    config.write_text(CONFIG.format(spool="/s2"))  # same length, same inode, maybe the same mtime tick
    assert routing.read_routing(str(config), None).spool_dir == "/s2"
    monkeypatch.setenv("OPSDB_WAL__SPOOL_DIR", "/from-env")
    assert routing.read_routing(str(config), None).spool_dir == "/from-env"
    monkeypatch.setenv("OPSDB_WAL__ASYNC", "false")
    assert routing.read_routing(str(config), None).async_ is False


def test_a_cache_directory_that_is_not_safely_ours_is_never_used(tmp_path, cache):
    cache.mkdir(mode=0o755)
    os.chmod(cache, 0o755)  # readable by others: someone could have planted entries
    assert routing.cache_dir() is None
    config = _config(tmp_path)
    assert routing.read_routing(str(config), None).spool_dir == "/s1"
    assert not list(cache.glob("routing-*"))
    os.rmdir(cache)
    os.symlink(tmp_path, cache)
    assert routing.cache_dir() is None


def test_an_entry_for_another_key_with_the_same_name_is_ignored(tmp_path, cache):
    config = _config(tmp_path)
    routing.read_routing(str(config), None)
    (entry,) = cache.glob("routing-*")
    lines = entry.read_text().split("\n")
    entry.write_text("\n".join([lines[0], "another key", *lines[2:]]).replace("=s:/s1", "=s:/other"))
    assert routing.read_routing(str(config), None).spool_dir == "/s1"


def test_unreadable_or_ambiguous_configs_go_to_the_validated_path(tmp_path, cache):
    assert routing.read_routing(str(tmp_path / "missing.toml"), None) is None
    bad = tmp_path / "bad.toml"
    bad.write_text("[wal\n")
    assert routing.read_routing(str(bad), None) is None
    two = tmp_path / "two.toml"
    two.write_text("[clusters.a]\nconninfo='x'\n[clusters.b]\nconninfo='y'\n")
    assert routing.read_routing(str(two), None) is None  # which cluster: the validated path asks
    assert routing.read_routing(str(two), "b").cluster == "b"
    assert not [p for p in cache.glob("routing-*") if "bad" in p.read_text()]


def test_os_user_is_routed_and_root_keeps_out_of_another_users_helpers(tmp_path, cache, monkeypatch):
    import pwd

    config = _config(tmp_path)
    found = routing.read_routing(str(config), None)
    assert found is not None and found.os_user == "postgres"  # the default, as in the validated settings
    config.write_text(CONFIG.format(spool="/s1") + 'os_user = "nobody"\n')
    found = routing.read_routing(str(config), None)
    assert found is not None and found.os_user == "nobody"
    monkeypatch.setenv("OPSDB_CLUSTERS__MAIN__OS_USER", "someone")
    assert routing.read_routing(str(config), "main").os_user == "someone"

    me = pwd.getpwuid(os.geteuid()).pw_name
    as_root = os.geteuid() == 0
    assert routing.Routing(os_user="nobody").helpers_of_another_user() is as_root
    assert routing.Routing(os_user=me).helpers_of_another_user() is False
    assert routing.Routing(os_user="no-such-user-on-this-host").helpers_of_another_user() is False
