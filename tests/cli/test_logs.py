"""Log lines of a command: start (what, cluster, repository, key id) and end (result, bytes, duration) at
info level on stderr, as text or JSON lines, and in `[log] file` (one file per command kind); the
scheduler's jobs log the same way (their own lines, and the scheduler's per job)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from opsdb.stream.crypto import generate_key_file, load_key


def opsdb(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_")}
    return subprocess.run(
        [sys.executable, "-m", "opsdb", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def config(tmp_path: Path, extra: str = "") -> Path:
    generate_key_file(tmp_path / "key")
    path = tmp_path / "opsdb.toml"
    path.write_text(
        f'[repository]\nurl = "file://{tmp_path}/repo"\n[encryption]\nkey_file = "{tmp_path}/key"\n'
        f'[clusters.main]\nconninfo = "host=127.0.0.1"\n[log]\nfile = "{tmp_path}/logs/{{cluster}}-{{command}}.log"\n'
        + extra
    )
    return path


def test_start_and_end_lines_as_json_on_stderr_and_in_a_file_per_command_kind(tmp_path):
    cfg = config(tmp_path)
    key_id = load_key(key_file=tmp_path / "key").id
    result = opsdb("backups", "list", "--config", str(cfg), "--log-format", "json", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"backups": []}  # stdout stays one object
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    start, end = lines[0], lines[-1]
    assert start["event"] == "start" and start["level"] == "info" and start["command"] == "backups list"
    assert start["cluster"] == "main" and start["repository"] == f"file://{tmp_path}/repo"
    assert start["key_id"] == key_id
    assert end["event"] == "end" and end["result"] == "ok" and end["exit_code"] == 0
    assert 0 < end["duration_seconds"] < 60
    secret = (tmp_path / "key").read_text().strip().splitlines()[-1]
    assert secret not in result.stderr
    failed = opsdb("info", "--config", str(cfg), "--cluster", "nope")
    assert failed.returncode == 2
    assert "opsdb: info: end result=failed exit_code=2" in failed.stderr
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["main-backups-list.log", "nope-info.log"]
    logged = (tmp_path / "logs" / "nope-info.log").read_text()
    assert " info: info: start cluster=nope " in logged and "end result=failed" in logged


def test_text_lines_quote_values_with_spaces(tmp_path):
    cfg = config(tmp_path)
    result = opsdb("--config", str(cfg), "backups", "list")
    first = result.stderr.splitlines()[0]
    assert first.startswith("opsdb: backups list: start cluster=main repository=file://")


def test_the_schedulers_jobs_log_the_same_way(tmp_path):
    cfg = config(
        tmp_path,
        '[schedule.listing]\ncron = "* * * * * */2"\ncommand = "backups list"\n'
        f'[scheduler]\nstate_dir = "{tmp_path}/state"\n',
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsdb", "--config", str(cfg), "--log-format", "json", "schedule", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    job_log = tmp_path / "logs" / "main-backups-list.log"
    try:
        deadline = time.monotonic() + 30
        while not (job_log.exists() and "end" in job_log.read_text()):  # bounded
            assert time.monotonic() < deadline and proc.poll() is None, "the job did not run"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    events = [_json(line) for line in err.splitlines()]
    jobs = [e for e in events if e.get("job") == "listing"]
    assert {"start", "end"} <= {e["event"] for e in jobs}, err
    assert any(e["event"] == "end" and e["result"] == "ok" and e["exit_code"] == 0 for e in jobs)
    own = job_log.read_text().splitlines()  # the job's own lines, in the config's format (text)
    assert " info: backups list: start cluster=main " in own[0]
    assert any(" info: backups list: end result=ok exit_code=0 " in line for line in own)


def _json(line: str) -> dict:
    try:
        return json.loads(line)
    except ValueError:  # `opsdb: job NAME: next run ...` before the loop starts
        return {}


def test_a_usage_error_after_the_start_line_still_logs_the_end(tmp_path):
    cfg = config(tmp_path)
    result = opsdb("--config", str(cfg), "backups", "list", "--nope")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("opsdb: backups list: start ")
    assert lines[1].startswith("opsdb: backups list: end result=failed exit_code=2 ")
    assert "No such option: --nope" in lines[2]
    unknown = opsdb("--config", str(cfg), "--json", "info", "--cluster", "x")
    assert json.loads(unknown.stdout)["hint"].startswith("pass --cluster with a configured name")
