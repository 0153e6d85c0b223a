"""wal-push / wal-fetch on both S3 implementations (moto, which refuses a second create-only write, and
s3rver, which ignores If-None-Match): exit codes 0 / 1 / >125 (unreachable, tampered), and a different
file under an archived name is refused with nothing replaced on either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from opsdb.repo import layout
from opsdb.stream.crypto import generate_key_file
from tests.fakes import wal_segment
from tests.fixtures.s3 import both_s3_servers

s3_server = both_s3_servers()

SEG = "000000010000000000000001"


def write_config(tmp_path, url, endpoint, **wal):
    if not (tmp_path / "key").exists():
        generate_key_file(tmp_path / "key")
    text = (
        f'[repository]\nurl = "{url}"\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\nmax_attempts = 2\n'
        f'[encryption]\nkey_file = "{tmp_path}/key"\nrequired = true\n'
        "[compression]\nlevel = 1\n"
        '[clusters.main]\nconninfo = "host=127.0.0.1"\n'
        f'[wal]\nspool_dir = "{tmp_path}/spool"\n' + "".join(f"{k} = {str(v).lower()}\n" for k, v in wal.items())
    )
    path = tmp_path / f"opsdb-{url.split('/', 3)[2]}-{url.rsplit('/', 1)[-1]}.toml"
    path.write_text(text)
    return path


def opsdb(config, *args, cwd):
    argv = [sys.executable, "-m", "opsdb.cli.fastpath", "--config", str(config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=cwd, env=dict(os.environ))


@pytest.fixture
def pgdata(tmp_path):
    (tmp_path / "pgdata" / "pg_wal").mkdir(parents=True)
    (tmp_path / "pgdata" / "pg_wal" / SEG).write_bytes(wal_segment(SEG, os.urandom(1 << 16) * 256))
    return tmp_path / "pgdata"


def test_push_fetch_and_exit_codes_on_s3(tmp_path, pgdata, s3_server, s3_bucket, s3_client):
    config = write_config(tmp_path, f"s3://{s3_bucket}/wal-test", s3_server.endpoint)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    # the first write probed the store and recorded what it does in the repository marker
    doc = json.loads(s3_client.get_object(Bucket=s3_bucket, Key="wal-test/opsdb-repository.json")["Body"].read())
    assert doc["capabilities"]["conditional_writes"]["put"] == {"moto": "refused", "s3rver": "ignored"}[s3_server.name]
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    ok = opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert ok.returncode == 0
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == (pgdata / "pg_wal" / SEG).read_bytes()
    missing = opsdb(config, "wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY", cwd=pgdata)
    assert (missing.returncode, missing.stderr) == (1, "")
    # different content under the same name: refused, the stored object untouched
    key = "wal-test/" + layout.wal_object("main", SEG)
    before = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    (pgdata / "pg_wal" / SEG).write_bytes(wal_segment(SEG, b"x" * 4096))
    conflict = opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata)
    assert conflict.returncode == 1 and "different content" in conflict.stderr
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == before
    # a tampered object: authentication fails -> recovery must stop (>125), nothing written
    tampered = bytearray(before)
    tampered[len(tampered) // 2] ^= 0x40
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(tampered))
    bad = opsdb(config, "wal-fetch", SEG, "pg_wal/TAMPERED", cwd=pgdata)
    assert bad.returncode > 125 and not (pgdata / "pg_wal" / "TAMPERED").exists()


def test_a_mistyped_prefix_or_missing_bucket_is_not_an_empty_archive(tmp_path, pgdata, s3_endpoint, s3_bucket):
    config = write_config(tmp_path, f"s3://{s3_bucket}/real", s3_endpoint)
    assert opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata).returncode == 0
    missing = opsdb(config, "wal-fetch", "000000010000000000000002", "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert (missing.returncode, missing.stderr) == (1, "")  # proven archive: a real "not archived"
    typo = write_config(tmp_path, f"s3://{s3_bucket}/rael", s3_endpoint)
    result = opsdb(typo, "wal-fetch", "000000010000000000000002", "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert result.returncode > 125 and f"no opsdb repository at s3://{s3_bucket}/rael" in result.stderr
    nobucket = write_config(tmp_path, "s3://no-such-bucket-here/real", s3_endpoint)
    result = opsdb(nobucket, "wal-fetch", "000000010000000000000002", "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert result.returncode > 125 and "no-such-bucket-here" in result.stderr


def test_unreachable_endpoint_exits_above_125(tmp_path, pgdata, moto_endpoint):
    config = write_config(tmp_path, "s3://nowhere/wal", "http://127.0.0.1:9")
    result = opsdb(config, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert result.returncode > 125, result.stderr
    assert not (pgdata / "pg_wal" / "RECOVERYXLOG").exists()
    push = opsdb(config, "wal-push", f"pg_wal/{SEG}", cwd=pgdata)
    assert 0 < push.returncode < 126  # archive_command: an ordinary failure, PostgreSQL retries


def test_async_push_and_prefetch_on_s3(tmp_path, pgdata, s3_endpoint, s3_bucket):
    config = write_config(tmp_path, f"s3://{s3_bucket}/async", s3_endpoint, **{"async": True, "prefetch": 3})
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 5)]
    (pgdata / "pg_wal" / "archive_status").mkdir()
    for name in names:
        (pgdata / "pg_wal" / name).write_bytes(wal_segment(name, os.urandom(1 << 16) * 16))
        (pgdata / "pg_wal" / "archive_status" / f"{name}.ready").touch()
    try:
        for name in names:
            result = opsdb(config, "wal-push", f"pg_wal/{name}", cwd=pgdata)
            assert result.returncode == 0, result.stderr
        restored = tmp_path / "restored"
        (restored / "pg_wal").mkdir(parents=True)
        for name in names:
            result = opsdb(config, "wal-fetch", name, "pg_wal/RECOVERYXLOG", cwd=restored)
            assert result.returncode == 0, result.stderr
            assert (restored / "pg_wal" / "RECOVERYXLOG").read_bytes() == (pgdata / "pg_wal" / name).read_bytes()
    finally:
        for lock in (tmp_path / "spool").rglob("*.lock"):
            text = lock.read_text().strip()
            if text:
                try:
                    os.kill(int(text), 15)
                except ProcessLookupError:
                    pass
