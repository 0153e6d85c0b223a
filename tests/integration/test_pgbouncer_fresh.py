"""`pgbouncer generate --discover` on a freshly initialised cluster, whose only login role is the
superuser: a refusal that says what to do (exit 2, nothing written), never an internal error; once
an application role exists the same command sizes the pools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsdb.pg.conn import connect
from tests.fixtures.pg import ClusterFactory

pytestmark = pytest.mark.integration


def _generate(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSDB_", "PG"))}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "opsdb",
            "--config",
            str(config),
            "pgbouncer",
            "generate",
            "--out-dir",
            str(out),
            "--discover",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_discover_on_a_cluster_with_only_the_superuser(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    cluster = make_cluster()
    config = tmp_path / "opsdb.toml"
    config.write_text(
        "[clusters.main]\n"
        f'conninfo = "host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"\n'
        '[pgbouncer]\ntarget_version = "1.21"\nlisten_addr = "127.0.0.1"\n'
    )
    out = tmp_path / "out"
    refused = _generate(config, out)
    assert refused.returncode == 2, refused.stderr
    assert "no login role other than superusers" in refused.stderr and "CREATE ROLE" in refused.stderr
    assert "Traceback" not in refused.stderr and "internal error" not in refused.stderr
    assert not (out / "pgbouncer.ini").exists()

    with connect(cluster.conninfo()) as c:
        c.execute("CREATE ROLE app LOGIN PASSWORD 'app-pw-1'")
    sized = _generate(config, out)
    assert sized.returncode == 0, sized.stderr
    ini = (out / "pgbouncer.ini").read_text()
    assert "default_pool_size" in ini and '"app"' in (out / "userlist.txt").read_text()
