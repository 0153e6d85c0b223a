"""wal-push / wal-fetch through the lean command line (as PostgreSQL runs them), file:// repository.

Exit codes are the contract here (SPEC): push 0 only once stored; fetch 0 / 1 (missing, quiet) / >125.
"""

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    for lock in (tmp_path / "spool").rglob("*.lock"):
        with contextlib.suppress(ValueError, ProcessLookupError, FileNotFoundError):
            os.kill(int(lock.read_text().strip() or 0), signal.SIGTERM)


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
    assert '"source": "prefetch"' in result.stdout
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
    spooled = Path()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list((tmp_path / "spool").rglob("data/000000010000000000000002"))
        if found and Path(str(found[0]) + ".json").exists():
            spooled = found[0]
            break
        time.sleep(0.05)
    assert spooled.is_file()
    spooled.write_bytes(b"tampered")  # the spool is local disk: a damaged copy must not reach recovery
    result = opsdb(config, "--json", "wal-fetch", "000000010000000000000002", "pg_wal/X", cwd=restore)
    assert result.returncode == 0
    assert (restore / "pg_wal" / "X").read_bytes() == (pgdata / "pg_wal" / "000000010000000000000002").read_bytes()


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


def _agent_pids(tmp_path, kind):
    from opsdb.ops.walspool import DaemonLock

    locks = (tmp_path / "spool").rglob(f"agent/{kind}-*.lock")
    return sorted(int(lock.read_text()) for lock in locks if DaemonLock(lock).held_by_other())


def test_sync_calls_are_served_by_one_warm_agent(tmp_path, pgdata, stop_daemons):
    config = _config(tmp_path)
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 5)]
    for name in names[:2]:
        segment(pgdata, name)
        assert opsdb(config, "wal-push", f"pg_wal/{name}", cwd=pgdata).returncode == 0
    agents = _agent_pids(tmp_path, "push")
    assert len(agents) == 1
    segment(pgdata, names[2])
    assert opsdb(config, "wal-push", f"pg_wal/{names[2]}", cwd=pgdata).returncode == 0
    assert _agent_pids(tmp_path, "push") == agents  # the same warm process served the later call
    os.kill(agents[0], signal.SIGKILL)  # kill -9: the next call starts a new agent and succeeds
    segment(pgdata, names[3])
    assert opsdb(config, "wal-push", f"pg_wal/{names[3]}", cwd=pgdata).returncode == 0
    assert _agent_pids(tmp_path, "push") not in ([], agents)
    for name in names:
        fetched = opsdb(config, "wal-fetch", name, "pg_wal/RECOVERYXLOG", cwd=pgdata)
        assert fetched.returncode == 0, fetched.stderr
        assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == (pgdata / "pg_wal" / name).read_bytes()
    assert len(_agent_pids(tmp_path, "fetch")) == 1


def test_agent_off_means_every_call_works_alone(tmp_path, pgdata):
    config = _config(tmp_path, agent=False)
    src = segment(pgdata)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    assert opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata).returncode == 0
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == src.read_bytes()
    assert not list((tmp_path / "spool").rglob("agent"))


@pytest.mark.parametrize("mode", [{"async": True}, {"prefetch": 2}, {}])
def test_an_unusable_spool_makes_calls_work_in_process_with_a_warning(tmp_path, pgdata, mode):
    config = _config(tmp_path, **mode)
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    src = segment(pgdata)
    pushed = opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata)
    assert pushed.returncode == 0 and "working in-process" in pushed.stderr
    assert next((tmp_path / "repo").rglob(SEG)).is_file()
    fetched = opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert fetched.returncode == 0 and "working in-process" in fetched.stderr
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == src.read_bytes()
