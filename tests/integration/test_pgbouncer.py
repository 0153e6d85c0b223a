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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsdb.errors import DatabaseError
from opsdb.ops.pooler.target import find_pgbouncer
from opsdb.pg.conn import connect
from opsdb.pg.instance import Instance
from opsdb.proc import Cmd, LocalRunner, Spawned
from tests.fixtures.pg import free_port, make_temp_dir, os_user
from tests.gate import missing
from tests.polling import raises, wait_until

pytestmark = pytest.mark.integration

APP_PASSWORD = "app-Secret-42"
PGBOUNCER = find_pgbouncer()
if PGBOUNCER is None:
    missing("no pgbouncer binary (apt-get install -y pgbouncer)", module=True)


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
    wrong = f"host=127.0.0.1 port={pg_cluster.port} dbname=appdb user=app password=wrong"
    # the server itself now refuses app without the password (once it has reloaded pg_hba.conf)
    wait_until(lambda: raises(DatabaseError, lambda: connect(wrong).close()), "pg_hba.conf reloaded")
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
        f'pg_bin_dir = "{cluster.tools.bin_dir}"',
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


def _start_pgbouncer(workdir: Path, cluster: Instance, **pgbouncer: object) -> tuple[Spawned, Path, int]:
    """Generate for a fresh port and start pgbouncer on it. Other tests on this machine may take a
    port between free_port() and the bind, so a bind failure retries with a new port (3 tries)."""
    for _attempt in range(3):
        port = free_port()
        config = _config(workdir, cluster, port, **pgbouncer)
        out = workdir / f"live-{time.monotonic_ns()}"
        done = _opsdb(config, "pgbouncer", "generate", "--out-dir", str(out), "--discover")
        assert done.returncode == 0, done.stderr
        _chown_tree(out)
        log = out / "pgbouncer.out"
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


def _status(config: Path, *args: str) -> tuple[int, dict]:
    done = _opsdb(config, "--json", "pgbouncer", "status", *args, env={"PGPASSWORD": APP_PASSWORD})
    return done.returncode, json.loads(done.stdout)


def test_auth_type_hba_with_the_configured_binary_and_target_version(scram_cluster: Instance, workdir: Path) -> None:
    """auth_type = hba: PgBouncer's HBA file decides (postgres refused for app, appdb by SCRAM), and
    `pgbouncer check` reports an HBA line the real binary drops although it starts."""
    hba = workdir / "pgb_hba.conf"
    hba.write_text("host postgres app 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\n")
    _chown_tree(hba)
    settings = {"auth_type": "hba", "auth_hba_file": str(hba), "binary": PGBOUNCER, "target_version": "1.18"}
    proc, config, port = _start_pgbouncer(workdir, scram_cluster, **settings)
    try:
        through = f"host=127.0.0.1 port={port} user=app password={APP_PASSWORD}"
        with connect(f"{through} dbname=appdb") as c:
            assert c.fetchval("SELECT current_user") == "app"
        with pytest.raises(DatabaseError):  # the HBA file's reject line, not the server
            connect(f"{through} dbname=postgres").close()
        code, doc = _status(config)
        assert code == 0, doc  # the admin console login went through the HBA file too
    finally:
        proc.terminate(timeout=5)

    out = workdir / "gen-hba"
    done = _opsdb(
        _config(workdir, scram_cluster, free_port(), **settings),
        "--json",
        "pgbouncer",
        "generate",
        "--out-dir",
        str(out),
        "--discover",
    )
    assert done.returncode == 0, done.stderr
    generated = json.loads(done.stdout)
    assert generated["pgbouncer_version"] == "1.18.0"
    assert generated["pgbouncer_version_source"] == "target_version"
    text = (out / "pgbouncer.ini").read_text()
    assert f"auth_hba_file = {hba}\n" in text and "auth_type = hba\n" in text
    assert ";max_prepared_statements = 200" in text  # 1.21+ only

    hba.write_text(hba.read_text() + "host all all all md5\n")  # 'all' is no address to PgBouncer 1.18
    checked = _opsdb(config, "--json", "pgbouncer", "check", str(out / "pgbouncer.ini"))
    result = json.loads(checked.stdout)
    assert checked.returncode == 1, result
    assert result["loaded"] is True  # PgBouncer starts anyway and drops the line ...
    messages = [f["message"] for f in result["findings"]]
    assert any(m.startswith("auth_hba_file line 3: 'all' is not an IP address") for m in messages), messages
    assert any(m.startswith("pgbouncer logged:") and "hba line 3" in m for m in messages), messages


def test_status_grades_waiting_clients_and_an_unreachable_console(scram_cluster: Instance, workdir: Path) -> None:
    """One server connection per pool: a held transaction makes the next client wait; status goes
    WARNING, then CRITICAL, and back to OK once the transaction ends."""
    proc, config, port = _start_pgbouncer(workdir, scram_cluster, default_pool_size=1)
    thresholds = ("--wait-warning", "1", "--wait-critical", "3")
    through = f"host=127.0.0.1 port={port} dbname=appdb user=app password={APP_PASSWORD}"
    holder = connect(through, autocommit=False)
    waiter_conn = connect(through)
    try:
        holder.fetchval("SELECT 1")  # the pool's only server connection, inside a transaction
        code, doc = _status(config, *thresholds)
        assert code == 0 and doc["status"] == "OK", doc

        waited: list[object] = []
        waiter = threading.Thread(target=lambda: waited.append(waiter_conn.fetchval("SELECT 42")), daemon=True)
        waiter.start()
        # Each grade is awaited under its own thresholds: one status call can take longer than the
        # 2 s between WARNING and CRITICAL on a loaded machine, so one poll could skip WARNING.
        seen: dict[int, dict] = {}
        for wanted, limits in ((1, ("--wait-warning", "1", "--wait-critical", "3600")), (2, thresholds)):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and wanted not in seen:
                code, doc = _status(config, *limits)
                seen.setdefault(code, doc)
                if wanted not in seen:
                    time.sleep(0.2)
        assert 1 in seen and 2 in seen, seen.keys()
        warning = next(c for c in seen[1]["checks"] if c["name"] == "wait")
        assert warning["status"] == "WARNING" and "appdb/app" in warning["detail"]
        assert seen[2]["status"] == "CRITICAL" and seen[2]["waiting_clients"] == 1
        assert seen[2]["max_wait_seconds"] >= 3

        holder.execute("COMMIT")
        waiter.join(timeout=10)
        assert waited == [42]
        code, doc = _status(config, *thresholds)
        assert code == 0 and doc["waiting_clients"] == 0, doc
        human = _opsdb(config, "pgbouncer", "status", env={"PGPASSWORD": APP_PASSWORD})
        assert human.stdout.startswith("PGBOUNCER OK"), human.stdout
    finally:
        holder.close()
        waiter_conn.close()
        proc.terminate(timeout=5)

    code, doc = _status(config)  # stopped: nothing answers
    assert code == 2 and doc["status"] == "CRITICAL", doc
    assert doc["checks"][0]["detail"].startswith("pgbouncer not reachable")
