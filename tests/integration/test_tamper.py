"""The tamper matrix of issue #13 on real PostgreSQL: a primary archives through `opsdb wal-push` into a
file:// repository (a second cluster archives beside it), `opsdb backup` takes a base backup, and each
test damages its own copy of that repository one way: two WAL objects swapped, an older segment under
a newer name, another cluster's segment, a catalog entry under another id, a missing, empty or
mistyped repository, an unknown cluster. Each: a non-zero exit (wal-fetch above 125 where the
repository is not proven), the object or the missing thing named, and no server promoted. A
repository rewritten as releases before identity binding wrote it (envelope versions 1 and 2, no
cluster marker) still restores, and its WAL is checked by content.
(The moto S3 side of the repository cases is in tests/integration/test_wal_s3.py.)
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsdb.errors import ToolError
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import LocalRunner
from opsdb.repo import layout
from opsdb.repo.envelope import Codec, get_json, get_object, put_object, read_header
from opsdb.storage.local import LocalStorage
from opsdb.stream.crypto import generate_key_file, load_key
from tests.fixtures.pg import ClusterFactory, free_port, make_temp_dir, os_user
from tests.integration.test_pitr import _opsdb_for_server, wait_archived, x

pytestmark = pytest.mark.integration
OPSDB_HERE = str(Path(sys.executable).with_name("opsdb"))
STOP_WAIT = 60  # seconds a restored server may take to give up after a refused fetch


def _chown(path: Path) -> None:
    user = os_user()
    if user:
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _config(workdir: Path, repo_url: str, ports: dict[str, int], bin_dir: Path, name: str = "opsdb.toml") -> Path:
    path = workdir / name
    clusters = "".join(
        f'[clusters.{c}]\nconninfo = "host=127.0.0.1 port={p} user=postgres dbname=postgres"\npg_bin_dir = "{bin_dir}"\n'
        for c, p in ports.items()
    )
    path.write_text(
        f'[repository]\nurl = "{repo_url}"\n'
        f'[encryption]\nkey_file = "{workdir}/key"\nrequired = true\n'
        f"[compression]\nlevel = 1\n{clusters}"
        f'[wal]\nspool_dir = "{workdir}/spool"\n'
    )
    return path


def opsdb(
    world: dict, config: Path, *args: str, as_root: bool = True, cwd: str = "/tmp"
) -> subprocess.CompletedProcess:
    user = None if as_root else os_user()
    argv = [world["opsdb"] if user else OPSDB_HERE, "--config", str(config), *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    environ = dict(os.environ, OPSDB_EXECUTABLE=world["opsdb"])
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=environ, cwd=cwd)


def _segments(repo: Path, cluster: str) -> list[str]:
    names = [p.name for p in (repo / layout.wal_prefix(cluster)).rglob("*") if p.is_file() and len(p.name) == 24]
    return sorted(names)


@pytest.fixture(scope="module")
def world(pg_bin_dir):
    server_opsdb = _opsdb_for_server()
    factory = ClusterFactory(pg_bin_dir)
    workdir = make_temp_dir("opsdb-tamper-")
    try:
        generate_key_file(workdir / "key")
        config = _config(workdir, f"file://{workdir}/repo", {"main": 0, "other": 0}, pg_bin_dir)
        push = f"{server_opsdb} --config {config} --cluster %s wal-push %%p"
        primary = factory(archive_mode="on", archive_command=push % "main", lc_messages="C")
        other = factory(archive_mode="on", archive_command=push % "other", lc_messages="C")
        _config(workdir, f"file://{workdir}/repo", {"main": primary.port, "other": other.port}, pg_bin_dir)
        _chown(workdir)
        w = {"opsdb": server_opsdb, "config": config, "factory": factory, "workdir": workdir, "bin_dir": pg_bin_dir}
        x(primary, "CREATE TABLE t (id int PRIMARY KEY)")
        backup = opsdb(w, config, "--json", "--cluster", "main", "backup", as_root=False)
        assert backup.returncode == 0, backup.stderr
        w["backup"] = json.loads(backup.stdout)
        for i in (1, 2, 3):  # three more segments after the backup, one row in each
            x(primary, f"INSERT INTO t VALUES ({i})")
            wait_archived(primary)
        wait_archived(other)
        w["late"] = _segments(workdir / "repo", "main")[-3:]
        w["foreign"] = _segments(workdir / "repo", "other")[-1]
        w["sysid"] = primary.controldata()["Database system identifier"]
        w["other_sysid"] = other.controldata()["Database system identifier"]
        w["other_port"] = other.port
        yield w
    finally:
        factory.close()
        shutil.rmtree(workdir, ignore_errors=True)


def clone(world: dict, tag: str) -> tuple[Path, Path]:
    """A copy of the repository (owned by the server's user, as the original) and a config pointing at it."""
    workdir: Path = world["workdir"]
    repo = workdir / f"repo-{tag}"
    shutil.copytree(workdir / "repo", repo)
    _chown(repo)
    config = _config(workdir, f"file://{repo}", {"main": 1, "other": 1}, world["bin_dir"], f"opsdb-{tag}.toml")
    _chown(config)
    return repo, config


def wal_key(repo: Path, name: str, cluster: str = "main") -> Path:
    return repo / layout.wal_object(cluster, name)


def restore_and_start(world: dict, config: Path) -> tuple[Instance | None, str]:
    """`opsdb restore` (default target: the end of the archive) into a new directory, then start the
    server: returns it once it has stopped by itself, with its log. Fails if it ever gets promoted.
    When the restore itself refuses (planning reads the newest segment), returns (None, its error):
    then nothing was started and nothing is left in the target."""
    dest = world["factory"].new_dir() / "data"
    done = opsdb(world, config, "--cluster", "main", "restore", "--target-dir", str(dest))
    if done.returncode != 0:
        assert not dest.exists() or not any(dest.iterdir()), "a refused restore left files behind"
        return None, done.stderr
    instance = Instance(dest, free_port(), world["bin_dir"], os_user(), LocalRunner())
    world["factory"]._made.append((instance, dest.parent))
    try:
        instance.start(timeout=STOP_WAIT)
    except ToolError:
        pass  # gave up before accepting connections: the usual outcome
    deadline = time.monotonic() + STOP_WAIT
    while instance.is_running() and time.monotonic() < deadline:  # bounded
        with connect(instance.conninfo(), timeout=5) as c:  # read-only during recovery, never promoted
            assert c.fetchval("SELECT pg_is_in_recovery()") is True
        time.sleep(0.5)
    return instance, _never_promoted(instance)


def _never_promoted(instance: Instance) -> str:
    """The server stopped by itself, in recovery: no new timeline, recovery never completed. Its log."""
    log = instance.log_path.read_text(errors="replace")
    assert not instance.is_running(), f"recovery went on past a refused WAL file: {log}"
    assert "archive recovery complete" not in log and "selected new timeline ID" not in log, log
    assert not list((instance.data_dir / "pg_wal").glob("*.history")), "a new timeline was started"
    assert "FATAL:  could not restore file" in log, log
    return log


def _fetch(world: dict, config: Path, name: str, cluster: str = "main") -> subprocess.CompletedProcess:
    """wal-fetch as restore_command runs it: as the server's user, in a data directory."""
    data = world["factory"].new_dir()
    (data / "pg_wal").mkdir()
    _chown(data)
    _chown(config)
    argv = ("--cluster", cluster, "wal-fetch", name, "pg_wal/RECOVERYXLOG")
    return opsdb(world, config, *argv, as_root=False, cwd=str(data))


# --- objects in the wrong place ---------------------------------------------------------------------


def test_swapped_wal_objects_stop_recovery_and_verify_names_both(world):
    repo, config = clone(world, "swap")
    a, b = (wal_key(repo, n) for n in world["late"][:2])
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    fetched = _fetch(world, config, world["late"][0])
    assert fetched.returncode > 125 and "failed its identity check" in fetched.stderr
    assert f"it is wal {world['late'][1]}" in fetched.stderr and f"expected wal {world['late'][0]}" in fetched.stderr
    _, log = restore_and_start(world, config)
    assert "failed its identity check" in log
    verify = opsdb(world, config, "--json", "--cluster", "main", "verify")
    problems = {p["object"] for p in json.loads(verify.stdout)["problems"]}
    assert verify.returncode == 1 and {layout.wal_object("main", n) for n in world["late"][:2]} <= problems


def test_an_older_segment_under_a_newer_name_is_refused(world):
    repo, config = clone(world, "replay")
    older, newer = world["late"][0], world["late"][2]
    wal_key(repo, newer).write_bytes(wal_key(repo, older).read_bytes())
    fetched = _fetch(world, config, newer)
    assert (
        fetched.returncode > 125
        and f"it is wal {older}" in fetched.stderr
        and f"expected wal {newer}" in fetched.stderr
    )
    _, log = restore_and_start(world, config)
    assert newer in log and "identity check" in log


def test_a_segment_of_another_cluster_is_refused_naming_both_identities(world):
    repo, config = clone(world, "foreign")
    target = world["late"][1]
    wal_key(repo, target).write_bytes(wal_key(repo, world["foreign"], "other").read_bytes())
    fetched = _fetch(world, config, target)
    assert fetched.returncode > 125 and "of cluster 'other'" in fetched.stderr
    assert world["other_sysid"] in fetched.stderr and world["sysid"] in fetched.stderr
    _, log = restore_and_start(world, config)
    assert "of cluster 'other'" in log
    verify = opsdb(world, config, "--json", "--cluster", "main", "verify")
    assert verify.returncode == 1 and layout.wal_object("main", target) in verify.stdout


def test_wal_push_from_another_cluster_is_refused(world):
    repo, config = clone(world, "push")
    name = world["foreign"]
    key = load_key(key_file=world["workdir"] / "key")
    other = b"".join(get_object(LocalStorage(str(repo)), layout.wal_object("other", name), {key.id: key}))
    pgdata = world["factory"].new_dir()
    (pgdata / "pg_wal").mkdir()
    (pgdata / "pg_wal" / name).write_bytes(other)  # the other cluster's segment: its page header says so
    _chown(pgdata)
    before = wal_key(repo, name).read_bytes() if wal_key(repo, name).exists() else None
    pushed = opsdb(world, config, "--cluster", "main", "wal-push", f"pg_wal/{name}", as_root=False, cwd=str(pgdata))
    assert pushed.returncode == 1, pushed.stderr
    assert world["other_sysid"] in pushed.stderr and world["sysid"] in pushed.stderr
    assert (wal_key(repo, name).read_bytes() if wal_key(repo, name).exists() else None) == before


def test_a_backup_from_another_server_is_refused_until_reinit(world):
    """`backup` of a server with another system identifier (a cluster re-created under the same name) is
    refused naming both, storing nothing; `opsdb reinit` says what it would change and, with --yes,
    binds the cluster to the new server, which then backs up."""
    repo, _ = clone(world, "reinit")
    ports = {"main": world["other_port"], "other": 1}  # main's conninfo now reaches the other server
    config = _config(world["workdir"], f"file://{repo}", ports, world["bin_dir"], "opsdb-reinit.toml")
    _chown(config)
    catalog = repo / layout.catalog_prefix("main")
    before = sorted(p.name for p in catalog.rglob("*"))
    refused = opsdb(world, config, "--cluster", "main", "backup", as_root=False)
    assert refused.returncode != 0, refused.stdout
    assert world["other_sysid"] in refused.stderr and world["sysid"] in refused.stderr
    assert "Traceback" not in refused.stderr and sorted(p.name for p in catalog.rglob("*")) == before
    unconfirmed = opsdb(world, config, "--cluster", "main", "reinit", as_root=False)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert world["other_sysid"] in unconfirmed.stderr and world["sysid"] in unconfirmed.stderr
    moved = opsdb(world, config, "--json", "--cluster", "main", "reinit", "--yes", as_root=False)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["after"] == world["other_sysid"]
    taken = opsdb(world, config, "--json", "--cluster", "main", "backup", as_root=False)
    assert taken.returncode == 0, taken.stderr
    shown = opsdb(world, config, "--json", "--cluster", "main", "backups", "show", json.loads(taken.stdout)["id"])
    assert json.loads(shown.stdout)["system_identifier"] == world["other_sysid"]


def test_a_catalog_entry_copied_under_another_id_is_named(world):
    repo, config = clone(world, "catalog")
    original = repo / layout.catalog_entry("main", world["backup"]["id"])
    copy_id = "20991231T000000Z-F"
    (repo / layout.catalog_entry("main", copy_id)).write_bytes(original.read_bytes())
    listed = opsdb(world, config, "--cluster", "main", "backups", "list")
    assert listed.returncode != 0 and copy_id in listed.stderr and "identity check" in listed.stderr
    verify = opsdb(world, config, "--json", "--cluster", "main", "verify")
    assert verify.returncode == 1 and layout.catalog_entry("main", copy_id) in verify.stdout
    dest = world["factory"].new_dir() / "data"
    restored = opsdb(world, config, "--cluster", "main", "restore", "--backup", copy_id, "--target-dir", str(dest))
    assert restored.returncode != 0 and copy_id in restored.stderr and not dest.exists()


# --- a repository that is not there -----------------------------------------------------------------


def test_missing_empty_and_mistyped_repositories_and_unknown_clusters_stop_recovery(world):
    workdir: Path = world["workdir"]
    name = world["late"][0]
    cases = {
        "missing": f"file://{workdir}/no-such-repo",
        "empty": f"file://{workdir}/empty-repo",
        "mistyped": f"file://{workdir}/rpeo",
    }
    (workdir / "empty-repo").mkdir()
    _chown(workdir / "empty-repo")
    for tag, url in cases.items():
        config = _config(workdir, url, {"main": 1}, world["bin_dir"], f"opsdb-{tag}.toml")
        fetched = _fetch(world, config, name)
        assert fetched.returncode > 125, (tag, fetched.stderr)
        assert f"no opsdb repository at {url}" in fetched.stderr, (tag, fetched.stderr)
        assert fetched.stderr.count("error:") == 1
    repo, config = clone(world, "unknown")
    # a segment past the end of `other`'s archive (other tests of this module archive more of it, so
    # main's segment names may well exist there too): `other` exists and has no such file, a real miss
    newest = _segments(repo, "other")[-1]
    beyond = f"{newest[:8]}{int(newest[8:16], 16) + 1:08X}{newest[16:]}"  # 4 GB further on
    unknown = _fetch(world, config, beyond, cluster="other")
    assert (unknown.returncode, unknown.stderr) == (1, "")
    text = config.read_text().replace("[clusters.other]", "[clusters.nosuch]")
    config.write_text(text)
    unknown = _fetch(world, config, name, cluster="nosuch")
    assert unknown.returncode > 125 and "has no cluster 'nosuch'" in unknown.stderr
    # a restore whose restore_command then finds no repository (unmounted, moved): recovery stops
    repo, config = clone(world, "vanish")
    dest_config = config.read_text()
    config.write_text(dest_config.replace(f"file://{repo}", f"file://{workdir}/rpeo"))
    fetch_config = config
    config = _config(workdir, f"file://{repo}", {"main": 1}, world["bin_dir"], "opsdb-vanish-restore.toml")
    _chown(config)
    dest = world["factory"].new_dir() / "data"
    done = opsdb(world, config, "--cluster", "main", "restore", "--target-dir", str(dest))
    assert done.returncode == 0, done.stderr
    auto = dest / "postgresql.auto.conf"
    auto.write_text(auto.read_text().replace(str(config), str(fetch_config)))
    instance = Instance(dest, free_port(), world["bin_dir"], os_user(), LocalRunner())
    world["factory"]._made.append((instance, dest.parent))
    try:
        instance.start(timeout=STOP_WAIT)
    except ToolError:
        pass
    deadline = time.monotonic() + STOP_WAIT
    while instance.is_running() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "no opsdb repository at" in _never_promoted(instance)


# --- repositories written before the binding ------------------------------------------------------------


def _downgrade(repo: Path, key_path: Path) -> None:
    """Rewrite the cluster as earlier releases wrote it: envelope versions 1 (plaintext digests) and 2
    (backups: compressed digests), catalog entries recording those digests, no cluster marker."""
    key = load_key(key_file=key_path)
    keys, codec = {key.id: key}, Codec("zstd", 1, key=key)
    storage = LocalStorage(str(repo))
    rewritten = {}
    for info in list(storage.list(layout.cluster_prefix("main"))):
        k = info.key
        if "/catalog/" in k or k.endswith(("opsdb-manifest.json", "opsdb-cluster.json")) or "/locks/" in k:
            continue
        header = read_header(storage, k)
        data = b"".join(get_object(storage, k, keys))
        storage.delete([k])
        # earlier releases digested WAL's plaintext (version 1), whatever this one writes
        wal = k.startswith(layout.wal_prefix("main"))
        rewritten[k] = put_object(
            storage, k, [data], codec, plaintext_digest=wal or header.digest_of == "plaintext", bind=False
        )
    for info in list(storage.list(layout.catalog_prefix("main"))):
        doc = get_json(storage, info.key, keys)
        for obj in doc["objects"]:
            new = rewritten[layout.backup_object("main", doc["id"], obj["name"])]
            obj.update(size=new.size, stored_size=new.stored_size, sha256=new.sha256, sha256_of=new.digest_of)
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        for k in (info.key, layout.backup_object("main", doc["id"], "opsdb-manifest.json")):
            storage.delete([k])
            put_object(storage, k, [body], codec, bind=False)
    storage.delete([layout.cluster_marker("main")])
    _chown(repo)


def test_a_repository_written_before_the_binding_still_restores_and_is_checked_by_content(world):
    repo, config = clone(world, "legacy")
    _downgrade(repo, world["workdir"] / "key")
    assert read_header(LocalStorage(str(repo)), layout.wal_object("main", world["late"][0])).version == 1
    verify = opsdb(world, config, "--json", "--cluster", "main", "verify")
    assert verify.returncode == 0, verify.stdout
    assert any("before objects were bound" in n for n in json.loads(verify.stdout)["notes"])
    dest = world["factory"].new_dir() / "data"
    port = free_port()
    done = opsdb(
        world,
        config,
        "--json",
        "--cluster",
        "main",
        "restore",
        "--target-dir",
        str(dest),
        "--start",
        "--port",
        str(port),
    )
    assert done.returncode == 0, done.stderr
    instance = Instance(dest, port, world["bin_dir"], os_user(), LocalRunner())
    world["factory"]._made.append((instance, dest.parent))
    with connect(instance.conninfo()) as c:
        assert [r["id"] for r in c.fetchall("SELECT id FROM t ORDER BY id")] == [1, 2, 3]
    instance.stop()
    # and an older segment copied under a newer name in such a repository is caught by its page header
    older, newer = world["late"][0], world["late"][2]
    wal_key(repo, newer).write_bytes(wal_key(repo, older).read_bytes())
    fetched = _fetch(world, config, newer)
    assert fetched.returncode > 125 and f"{newer} holds the segment at" in fetched.stderr
    verify = opsdb(world, config, "--json", "--cluster", "main", "verify")
    assert verify.returncode == 1 and "holds the segment at" in verify.stdout
