"""wal-push / wal-fetch through the lean command line (as PostgreSQL runs them), file:// repository.

Exit codes are the contract here (SPEC): push 0 only once stored; fetch 0 / 1 (missing, quiet) / >125.
"""

import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsdb.ops.wal.spool import DaemonLock, stop_helpers
from opsdb.stream.crypto import generate_key_file
from tests.fakes import TEST_SYSTEM_IDENTIFIER, wal_segment

SEG = "000000010000000000000001"


def _config(tmp_path, **wal):
    generate_key_file(tmp_path / "key")
    lines = [
        "[repository]",
        f'url = "file://{tmp_path}/repo"',
        "[encryption]",
        f'key_file = "{tmp_path}/key"',
        "required = true",
        "[compression]",
        "level = 1",
        "[clusters.main]",
        'conninfo = "host=127.0.0.1"',
        # the caller is the server's user here (as archive_command is): root calling for another user's
        # cluster is served in-process, never by the helpers (tests/integration/test_privileges.py)
        f'os_user = "{pwd.getpwuid(os.geteuid()).pw_name}"',
        "[wal]",
        f'spool_dir = "{tmp_path}/spool"',
        *[f"{k} = {str(v).lower()}" for k, v in wal.items()],
    ]
    path = tmp_path / "opsdb.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def opsdb(config, *args, cwd=None):
    cmd = [sys.executable, "-m", "opsdb.cli.fastpath", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def pgdata(tmp_path):
    d = tmp_path / "pgdata"
    (d / "pg_wal" / "archive_status").mkdir(parents=True)
    return d


def segment(pgdata, name=SEG, content=None, ready=False):
    path = pgdata / "pg_wal" / name
    path.write_bytes(wal_segment(name, content, size=1024 * 1024))
    if ready:
        (pgdata / "pg_wal" / "archive_status" / f"{name}.ready").touch()
    return path


@pytest.fixture
def stop_daemons(tmp_path):
    yield
    stop_helpers(str(tmp_path / "spool"))


def test_sync_push_fetch_exit_codes(tmp_path, pgdata):
    config = _config(tmp_path)
    src = segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0  # same content again
    fetched = opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert fetched.returncode == 0 and (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == src.read_bytes()
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").stat().st_mode & 0o777 == 0o600  # WAL holds table data
    missing = opsdb(config, "wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY", cwd=pgdata)
    assert (missing.returncode, missing.stderr) == (1, "")
    stored = next((tmp_path / "repo").rglob(SEG)).read_bytes()
    src.write_bytes(wal_segment(SEG, b"other" * 1000))
    conflict = opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata)
    assert conflict.returncode == 1 and "different content" in conflict.stderr
    assert next((tmp_path / "repo").rglob(SEG)).read_bytes() == stored


def test_fetch_tampered_exits_above_125(tmp_path, pgdata):
    config = _config(tmp_path)
    segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    obj = next((tmp_path / "repo").rglob(SEG))
    data = bytearray(obj.read_bytes())
    data[-100] ^= 0xFF
    obj.chmod(0o600)
    obj.write_bytes(bytes(data))
    result = opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert result.returncode > 125 and ("corrupt" in result.stderr or "authentic" in result.stderr)
    assert not (pgdata / "pg_wal" / "RECOVERYXLOG").exists()


def test_fetch_answers_not_archived_only_from_a_proven_repository(tmp_path, pgdata):
    config = _config(tmp_path)
    with config.open("a") as fh:
        fh.write("[clusters.other]\nconninfo = 'host=127.0.0.1'\n")

    def fetch(cluster="main"):
        return opsdb(config, "--cluster", cluster, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata)

    missing = fetch()  # the repository directory does not exist (an unmounted file system, a typo)
    assert missing.returncode > 125 and f"no opsdb repository at file://{tmp_path}/repo" in missing.stderr
    assert missing.stderr.count("error:") == 1
    (tmp_path / "repo").mkdir()
    empty = fetch()
    assert empty.returncode > 125 and "no opsdb repository" in empty.stderr
    segment(pgdata, "000000010000000000000002")
    assert opsdb(config, "--cluster", "main", "wal-push", "pg_wal/000000010000000000000002", cwd=pgdata).returncode == 0
    unknown = fetch("other")
    assert unknown.returncode > 125 and "has no cluster 'other'" in unknown.stderr
    proven = fetch()
    assert (proven.returncode, proven.stderr) == (1, "")
    assert not (pgdata / "pg_wal" / "RECOVERYXLOG").exists()


def test_push_from_another_system_identifier_is_refused(tmp_path, pgdata):
    config = _config(tmp_path)
    segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    foreign = pgdata / "pg_wal" / "000000010000000000000002"
    foreign.write_bytes(wal_segment(foreign.name, system_identifier=7300000000000000999))
    refused = opsdb(config, "wal-push", f"pg_wal/{foreign.name}", cwd=pgdata)
    assert refused.returncode == 1
    assert "7300000000000000999" in refused.stderr and str(TEST_SYSTEM_IDENTIFIER) in refused.stderr
    assert not list((tmp_path / "repo").rglob(foreign.name))


def test_bad_config_is_exit_2(tmp_path, pgdata):
    config = tmp_path / "bad.toml"
    config.write_text("[repository]\nurl = 'ftp://x'\n[clusters.main]\nconninfo='x'\n")
    segment(pgdata)
    result = opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata)
    assert result.returncode == 2 and "repository.url" in result.stderr


def test_async_push_stores_ready_files_ahead(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path, **{"async": True, "push_workers": 2})
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 6)]
    for name in names:
        segment(pgdata, name, ready=True)
    first = opsdb(config, "--json", "wal-push", f"pg_wal/{names[0]}", cwd=pgdata)
    assert first.returncode == 0, first.stderr
    # the pusher stores the other .ready files ahead; later calls find them stored
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((tmp_path / "repo").rglob("000000010000000000*"))) < 5:
        time.sleep(0.05)
    for name in names[1:]:
        (pgdata / "pg_wal" / "archive_status" / f"{name}.ready").rename(
            pgdata / "pg_wal" / "archive_status" / f"{name}.done"
        )
        result = opsdb(config, "--json", "wal-push", f"pg_wal/{name}", cwd=pgdata)
        assert result.returncode == 0 and '"pushed_ahead": true' in result.stdout
    for name in names:
        out = tmp_path / "out"
        assert opsdb(config, "wal-fetch", name, str(out), cwd=pgdata).returncode == 0
        assert out.read_bytes() == (pgdata / "pg_wal" / name).read_bytes()


def test_async_push_conflict_fails_and_keeps_original(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path, **{"async": True})
    src = segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    stored = next((tmp_path / "repo").rglob(SEG)).read_bytes()
    src.write_bytes(wal_segment(SEG, b"different" * 1000))
    result = opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata)
    assert result.returncode == 1 and "different content" in result.stderr
    assert next((tmp_path / "repo").rglob(SEG)).read_bytes() == stored


def test_prefetch_serves_verified_files(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path, prefetch=4)
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 7)]
    for name in names:
        segment(pgdata, name)
        assert opsdb(config, "wal-push", f"pg_wal/{name}", cwd=pgdata).returncode == 0
    restore = tmp_path / "restored"
    (restore / "pg_wal").mkdir(parents=True)
    for name in names:
        result = opsdb(config, "--json", "wal-fetch", name, "pg_wal/RECOVERYXLOG", cwd=restore)
        assert result.returncode == 0, result.stderr
        assert (restore / "pg_wal" / "RECOVERYXLOG").read_bytes() == (pgdata / "pg_wal" / name).read_bytes()
    assert '"source": "prefetch"' in result.stdout and '"waited_ms": ' in result.stdout
    missing = opsdb(config, "wal-fetch", "000000010000000000000007", "pg_wal/RECOVERYXLOG", cwd=restore)
    assert missing.returncode == 1


def test_prefetched_file_with_wrong_digest_is_never_served(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path, prefetch=2)
    for n in (1, 2, 3):
        segment(pgdata, f"0000000100000000000000{n:02X}")
        assert opsdb(config, "wal-push", f"pg_wal/0000000100000000000000{n:02X}", cwd=pgdata).returncode == 0
    restore = tmp_path / "restored"
    (restore / "pg_wal").mkdir(parents=True)
    assert opsdb(config, "wal-fetch", SEG, "pg_wal/X", cwd=restore).returncode == 0
    spooled = _wait_for(lambda: next((tmp_path / "spool").rglob("prefetch/*/000000010000000000000002"), None))
    spooled.write_bytes(b"tampered")  # the spool is local disk: a damaged copy must not reach recovery
    result = opsdb(config, "--json", "wal-fetch", "000000010000000000000002", "pg_wal/X", cwd=restore)
    assert result.returncode == 0 and '"source": "repository"' in result.stdout
    assert (restore / "pg_wal" / "X").read_bytes() == (pgdata / "pg_wal" / "000000010000000000000002").read_bytes()


def _wait_for(find, timeout=60.0):
    """Poll find() until it returns something (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.005)
    raise AssertionError(f"nothing found within {timeout}s")


def test_lean_path_hands_everything_else_to_typer():
    from opsdb.cli.fastpath import dispatch

    for args in (["--help"], ["wal-push", "--help"], ["--config", "x", "wal-push"], ["info"], ["--version"]):
        assert dispatch(args) is None


def test_fetch_with_an_unusable_key_stops_recovery(tmp_path, pgdata):
    config = _config(tmp_path)
    segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    (tmp_path / "key").unlink()  # e.g. not readable by the server's OS user
    result = opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert result.returncode > 125 and "key" in result.stderr  # never "not found": that would end recovery early


def _helper_pids(tmp_path):
    locks = (tmp_path / "spool").rglob("helper/*.lock")
    return sorted(int(lock.read_text()) for lock in locks if DaemonLock(str(lock)).held_by_other())


def test_pushes_and_fetches_are_served_by_one_warm_helper(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path)
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 5)]
    for name in names[:2]:
        segment(pgdata, name)
        assert opsdb(config, "wal-push", f"pg_wal/{name}", cwd=pgdata).returncode == 0
    helpers = _helper_pids(tmp_path)
    assert len(helpers) == 1
    segment(pgdata, names[2])
    assert opsdb(config, "wal-push", f"pg_wal/{names[2]}", cwd=pgdata).returncode == 0
    assert _helper_pids(tmp_path) == helpers  # the same warm process served the later call
    os.kill(helpers[0], signal.SIGKILL)  # kill -9: the next call starts a new helper and succeeds
    segment(pgdata, names[3])
    assert opsdb(config, "wal-push", f"pg_wal/{names[3]}", cwd=pgdata).returncode == 0
    new = _helper_pids(tmp_path)
    assert len(new) == 1 and new != helpers
    helpers = new
    for name in names:
        fetched = opsdb(config, "wal-fetch", name, "pg_wal/RECOVERYXLOG", cwd=pgdata)
        assert fetched.returncode == 0, fetched.stderr
        assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == (pgdata / "pg_wal" / name).read_bytes()
    assert _helper_pids(tmp_path) == helpers  # fetches too: one helper per cluster


def test_the_agent_key_of_older_configs_is_accepted_and_ignored(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path, agent=False)
    src = segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    assert opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata).returncode == 0
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == src.read_bytes()
    assert len(_helper_pids(tmp_path)) == 1


BIG = 64 * 1024 * 1024  # long enough to push or fetch that a kill -9 lands in the middle of it


def test_a_helper_that_validated_its_config_serves_without_the_config_models(tmp_path, pgdata, stop_daemons):
    """The first helper of a config validates it (pydantic), keeps the settings and starts again from
    them (exec: same pid); so does every later start. pydantic_core is a shared library: mapped once loaded."""
    config = _config(tmp_path)
    segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    [helper] = _helper_pids(tmp_path)
    assert list((tmp_path / "spool").rglob("helper/settings-*.json"))
    assert "pydantic_core" not in Path(f"/proc/{helper}/maps").read_text()
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0  # and it serves
    assert _helper_pids(tmp_path) == [helper]


def test_kill_9_of_the_helper_mid_push_leaves_nothing_that_looks_complete(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path)
    segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0  # starts the helper
    [helper] = _helper_pids(tmp_path)
    big = pgdata / "pg_wal" / "000000010000000000000002"
    big.write_bytes(wal_segment(big.name, size=BIG))
    cmd = [sys.executable, "-m", "opsdb.cli.fastpath", "--config", str(config), "wal-push", f"pg_wal/{big.name}"]
    call = subprocess.Popen(cmd, cwd=pgdata, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: list((tmp_path / "repo").rglob(".tmp-*")))  # the helper is writing the object
        assert not list((tmp_path / "repo").rglob(big.name))
        os.kill(helper, signal.SIGKILL)
        _, err = call.communicate(timeout=120)
    finally:
        call.kill()
    assert call.returncode == 0, err  # the dropped call asked a new helper, which stored it
    assert _helper_pids(tmp_path) not in ([], [helper])
    out = tmp_path / "out"
    assert opsdb(config, "wal-fetch", big.name, str(out), cwd=pgdata).returncode == 0
    assert out.read_bytes() == big.read_bytes()
    leftovers = [p.name for p in (tmp_path / "repo").rglob("*") if p.is_file() and big.name[:16] in str(p.parent)]
    # the killed helper's temp file stays a temp file; the only objects are the two stored (and read back) ones
    assert {n for n in leftovers if not n.startswith(".tmp-")} == {SEG, big.name, f".meta-{SEG}", f".meta-{big.name}"}


def test_kill_9_of_the_helper_mid_prefetch_serves_nothing_it_left(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path, prefetch=2)
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 5)]
    for name in names:
        (pgdata / "pg_wal" / name).write_bytes(wal_segment(name, size=BIG))
        assert opsdb(config, "wal-push", f"pg_wal/{name}", cwd=pgdata).returncode == 0
    stop_helpers(str(tmp_path / "spool"))
    _wait_for(lambda: not _helper_pids(tmp_path) or None)
    restore = tmp_path / "restored"
    (restore / "pg_wal").mkdir(parents=True)
    cmd = [sys.executable, "-m", "opsdb.cli.fastpath", "--config", str(config), "wal-fetch", names[0], "pg_wal/X"]
    call = subprocess.Popen(cmd, cwd=restore, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        left_by_the_dead = _wait_for(lambda: list((tmp_path / "spool").rglob("prefetch/*/.*.tmp")))  # fetching ahead
        os.kill(_helper_pids(tmp_path)[0], signal.SIGKILL)
        _, err = call.communicate(timeout=120)
    finally:
        call.kill()
    assert call.returncode == 0, err  # a call the helper dropped asked a new helper
    assert (restore / "pg_wal" / "X").read_bytes() == (pgdata / "pg_wal" / names[0]).read_bytes()
    for name in names[1:]:
        fetched = opsdb(config, "--json", "wal-fetch", name, "pg_wal/X", cwd=restore)
        assert fetched.returncode == 0, fetched.stderr
        assert (restore / "pg_wal" / "X").read_bytes() == (pgdata / "pg_wal" / name).read_bytes()
    assert not any(p.exists() for p in left_by_the_dead)  # never served: the new helper removed them
    assert '"source": "prefetch"' in fetched.stdout  # and the new helper prefetches again


@pytest.mark.parametrize("mode", [{"async": True}, {"prefetch": 2}, {}])
def test_an_unusable_spool_makes_calls_work_in_process_with_a_warning(tmp_path, pgdata, mode):
    """Typically a spool_dir created by root (0700) while PostgreSQL runs as postgres."""
    config = _config(tmp_path, **mode)
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    src = segment(pgdata)
    pushed = opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata)
    assert pushed.returncode == 0 and "working in-process" in pushed.stderr
    assert next((tmp_path / "repo").rglob(SEG)).is_file()
    fetched = opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert fetched.returncode == 0 and "working in-process" in fetched.stderr
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == src.read_bytes()
