"""A real pgbouncer started with the files `opsdb pgbouncer generate --discover` wrote, in front of a
real cluster that demands SCRAM: a discovered user logs in through it, the admin console answers
SHOW POOLS, `pgbouncer check` loads the file in the real binary, and over-sized pools are refused.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsdb.errors import DatabaseError
from opsdb.ops.pgbouncer import find_pgbouncer
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import Cmd, LocalRunner, Spawned
from tests.fixtures.pg import free_port, make_temp_dir, os_user

pytestmark = pytest.mark.integration

APP_PASSWORD = "app-Secret-42"
PGBOUNCER = find_pgbouncer()
if PGBOUNCER is None:
    pytest.skip("no pgbouncer binary (apt-get install -y pgbouncer)", allow_module_level=True)


def _opsdb(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPSDB_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "opsdb", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def _chown_tree(path: Path) -> None:
    user = os_user()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="module")
def scram_cluster(pg_cluster: Instance) -> Instance:
    """The shared cluster with an `app` role (SCRAM password) and an `appdb`, and TCP logins for
    `app` that must use SCRAM (so pgbouncer's login to the server really exercises the verifier)."""
    with connect(pg_cluster.conninfo()) as c:
        c.execute("SET password_encryption = 'scram-sha-256'")
        c.execute(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
        c.execute("CREATE DATABASE appdb OWNER app")
    hba = pg_cluster.data_dir / "pg_hba.conf"
    hba.write_text("host all app 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with connect(pg_cluster.conninfo()) as c:
        c.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)
    with pytest.raises(DatabaseError):  # the server itself now refuses app without the password
        connect(f"host=127.0.0.1 port={pg_cluster.port} dbname=appdb user=app password=wrong").close()
    return pg_cluster


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = make_temp_dir("opsdb-pgbouncer-test-")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _config(workdir: Path, cluster: Instance, port: int, **pgbouncer: object) -> Path:
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "pool_mode": "transaction",
        "users": ["app"],
        "admin_users": ["app"],
        "unix_socket_dir": str(workdir),
        "logfile": str(workdir / "pgbouncer.log"),
        "pidfile": str(workdir / "pgbouncer.pid"),
        **pgbouncer,
    }
    lines = [
        "[clusters.main]",
        f'conninfo = "host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"',
        "",
        "[pgbouncer]",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = workdir / f"opsdb-{time.monotonic_ns()}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _start_pgbouncer(workdir: Path, cluster: Instance) -> tuple[Spawned, Path, int]:
    """Generate for a fresh port and start pgbouncer on it. Other tests on this machine may take a
    port between free_port() and the bind, so a bind failure retries with a new port (3 tries)."""
    for attempt in range(3):
        port = free_port()
        config = _config(workdir, cluster, port)
        out = workdir / f"live-{attempt}"
        done = _opsdb(config, "pgbouncer", "generate", "--out-dir", str(out), "--discover")
        assert done.returncode == 0, done.stderr
        _chown_tree(out)
        log = workdir / f"pgbouncer-{attempt}.out"
        proc = LocalRunner().spawn(Cmd((PGBOUNCER, str(out / "pgbouncer.ini")), run_as=os_user()), log_path=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None and not _listening(port):
            time.sleep(0.1)
        if proc.poll() is None and _listening(port):
            return proc, config, port
        proc.terminate(timeout=5)
        text = log.read_text(errors="replace") if log.exists() else ""
        if "already in use" not in text:
            raise AssertionError(f"pgbouncer did not come up on {port}: {text[-2000:]}")
    raise AssertionError("pgbouncer could not bind a free port in 3 attempts")


def test_generated_files_serve_a_scram_login_and_the_admin_console(scram_cluster: Instance, workdir: Path) -> None:
    out = workdir / "gen"
    port = free_port()
    config = _config(workdir, scram_cluster, port)
    done = _opsdb(config, "--json", "pgbouncer", "generate", "--out-dir", str(out), "--discover")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["databases"] == ["appdb", "postgres"]
    assert doc["users"] == ["app"]
    ini, userlist = out / "pgbouncer.ini", out / "userlist.txt"
    for path in (ini, userlist):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = userlist.read_text()
    assert users.startswith('"app" "SCRAM-SHA-256$4096:')
    assert APP_PASSWORD not in users and APP_PASSWORD not in ini.read_text()
    assert "; Sizing:" in ini.read_text()

    # deterministic: the same input gives the same bytes
    first = ini.read_bytes(), userlist.read_bytes()
    assert _opsdb(config, "pgbouncer", "generate", "--out-dir", str(out), "--discover").returncode == 0
    assert (ini.read_bytes(), userlist.read_bytes()) == first

    # `pgbouncer check` loads it in the real binary
    checked = _opsdb(config, "--json", "pgbouncer", "check", str(ini))
    result = json.loads(checked.stdout)
    assert checked.returncode == 0, result
    assert result["loaded"] is True and result["ok"] is True
    assert result["worst_case_connections"] <= result["usable_connections"]

    proc, config, port = _start_pgbouncer(workdir, scram_cluster)
    try:
        through = f"host=127.0.0.1 port={port} dbname=appdb user=app"
        with connect(f"{through} password={APP_PASSWORD}") as c:
            assert c.fetchval("SELECT current_user") == "app"
            assert c.fetchval("SELECT current_database()") == "appdb"
            assert c.fetchval("SELECT inet_server_port()") == scram_cluster.port  # really the server behind it
        with pytest.raises(DatabaseError):
            connect(f"{through} password=wrong").close()

        status = _opsdb(config, "--json", "pgbouncer", "status", env={"PGPASSWORD": APP_PASSWORD})
        assert status.returncode == 0, status.stderr
        pools = json.loads(status.stdout)["pools"]
        assert any(p["database"] == "appdb" and p["user"] == "app" for p in pools)
        human = _opsdb(config, "pgbouncer", "status", env={"PGPASSWORD": APP_PASSWORD})
        assert "cl_active" in human.stdout and "appdb" in human.stdout
    finally:
        proc.terminate(timeout=5)


def test_check_rejects_a_file_the_real_pgbouncer_refuses(scram_cluster: Instance, workdir: Path) -> None:
    out = workdir / "gen-bad"
    config = _config(workdir, scram_cluster, free_port())
    assert _opsdb(config, "pgbouncer", "generate", "--out-dir", str(out), "--discover").returncode == 0
    ini = out / "pgbouncer.ini"
    ini.write_text(ini.read_text().replace("[pgbouncer]\n", "[pgbouncer]\nmax_clients = 10\n", 1))
    os.chmod(out / "userlist.txt", 0o644)
    done = _opsdb(config, "--json", "pgbouncer", "check", str(ini))
    result = json.loads(done.stdout)
    assert done.returncode == 1, result
    assert result["loaded"] is False
    assert "max_clients" in result["load_detail"]
    messages = [f["message"] for f in result["findings"]]
    assert any("unknown parameter 'max_clients'" in m for m in messages)
    assert any("world-readable" in m for m in messages)


def test_oversized_pools_are_refused_with_the_arithmetic(scram_cluster: Instance, workdir: Path) -> None:
    out = workdir / "gen-big"
    config = _config(workdir, scram_cluster, free_port(), default_pool_size=50, max_db_connections=0, instances=2)
    done = _opsdb(config, "pgbouncer", "generate", "--out-dir", str(out), "--discover")
    assert done.returncode == 2, done.stderr
    # max_connections = 40 on the test clusters
    assert "40 max_connections - 3 superuser_reserved_connections - 5 server_reserve = 32" in done.stderr
    assert "worst case = (50 appdb + 50 postgres) * 2 instances = 200" in done.stderr
    assert not (out / "pgbouncer.ini").exists()
