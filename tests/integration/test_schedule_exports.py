"""cron and systemd recipes that run: `schedule crontab` lines executed by a real cron daemon (Debian's
`cron`, in a private mount namespace so the machine's own crontabs are neither read nor touched), and
`schedule systemd` units accepted by `systemd-analyze verify` with timers that fire when cron would."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsdb.automation.schedule import make_job, next_runs
from tests.gate import missing

pytestmark = pytest.mark.integration

OPSDB = Path(sys.executable).with_name("opsdb")


def opsdb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsdb", *args], capture_output=True, text=True, timeout=60)


def test_crontab_lines_run_in_a_real_cron_daemon_with_the_environment_file(tmp_path):
    cron = shutil.which("cron") or ("/usr/sbin/cron" if Path("/usr/sbin/cron").exists() else None)
    if cron is None or os.geteuid() != 0 or shutil.which("unshare") is None:
        missing("needs root, unshare and Debian's cron (scripts/test.sh installs it as root)")
    made = tmp_path / "metrics.prom"
    config = tmp_path / "opsdb.toml"
    config.write_text(
        f'[repository]\nurl = "file://{tmp_path}/repo"\n[scheduler]\nstate_dir = "{tmp_path}/state"\n'
        '[schedule.every-minute]\ncron = "* * * * *"\ncommand = "metrics"\n'
    )
    # the only place the job learns where to write: proves the env file reaches the job
    env_file = tmp_path / "opsdb.env"
    env_file.write_text(f"OPSDB_METRICS__TEXTFILE={made}\n")
    for sub in ("spool", "cron.d", "run", "lock"):
        (tmp_path / sub).mkdir()
    (tmp_path / "crontab").touch()
    result = opsdb(
        "schedule",
        "crontab",
        "--config",
        str(config),
        "--env-file",
        str(env_file),
        "--lock-dir",
        str(tmp_path / "lock"),
    )
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("* * * * *"))
    assert f" {OPSDB} " in line or f" {os.path.realpath(OPSDB)} " in line  # absolute: cron's PATH lacks it
    crontab = tmp_path / "spool" / "root"
    crontab.write_text(result.stdout)
    crontab.chmod(0o600)
    binds = [
        (tmp_path / "spool", "/var/spool/cron/crontabs"),
        (tmp_path / "cron.d", "/etc/cron.d"),
        (tmp_path / "crontab", "/etc/crontab"),
        (tmp_path / "run", "/run"),
    ]
    script = " && ".join(f"mount --bind {src} {dst}" for src, dst in binds) + f" && exec {cron} -f -L 15"
    daemon = subprocess.Popen(
        ["unshare", "--mount", "--fork", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 130  # cron starts jobs at the top of a minute: at most ~60 s + the job
        while not made.exists():  # bounded by the deadline
            assert daemon.poll() is None, daemon.communicate()[0]
            assert time.monotonic() < deadline, "cron did not run the job within two minutes"
            time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    assert "opsdb_" in made.read_text()


JOBS = """
[clusters.main]
conninfo = "host=127.0.0.1"
[schedule.nightly]
cron = "0 2 * * *"
command = "playbook run /etc/opsdb/playbooks/nightly.yaml"
cluster = "main"
timezone = "Europe/Berlin"
timeout = "6h"
jitter = "5m"
[schedule.workdays]
cron = "*/15 8-18 * * 1-5"
command = "heartbeat"
[schedule.monthly]
cron = "30 4 1,15 jan,jul *"
command = "verify"
"""


def test_systemd_units_verify_and_their_timers_fire_when_cron_would(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed on this machine (Debian package: systemd)")
    config = tmp_path / "opsdb.toml"
    config.write_text(JOBS)
    units = tmp_path / "units"
    env_file = tmp_path / "opsdb.env"
    env_file.write_text("AWS_ACCESS_KEY_ID=x\n")
    result = opsdb(
        "schedule",
        "systemd",
        "--config",
        str(config),
        "--env-file",
        str(env_file),
        "--user",
        "postgres",
        "--output-dir",
        str(units),
    )
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in units.iterdir())
    assert names == [f"opsdb-{j}.{k}" for j in ("monthly", "nightly", "workdays") for k in ("service", "timer")]
    nightly = (units / "opsdb-nightly.service").read_text()
    assert f"EnvironmentFile={env_file}" in nightly and "User=postgres" in nightly
    assert "TimeoutStartSec=21600s" in nightly and "ExecStart=/" in nightly  # an absolute path
    verify = subprocess.run(
        [analyze, "verify", *map(str, sorted(units.iterdir()))], capture_output=True, text=True, timeout=120, cwd=units
    )
    assert verify.returncode == 0, verify.stderr
    for name, cron, tz in (
        ("nightly", "0 2 * * *", "Europe/Berlin"),
        ("workdays", "*/15 8-18 * * 1-5", "UTC"),
        ("monthly", "30 4 1,15 jan,jul *", "UTC"),
    ):
        timer = (units / f"opsdb-{name}.timer").read_text()
        calendar = re.search(r"^OnCalendar=(.+)$", timer, re.M).group(1)  # type: ignore[union-attr]
        shown = subprocess.run(
            [analyze, "calendar", "--iterations", "5", calendar],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TZ": "UTC"},
        )
        assert shown.returncode == 0, shown.stderr
        elapses = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", shown.stdout)
        job = make_job(name, {"cron": cron, "command": "heartbeat", "timezone": tz})
        expected = [t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") for t in next_runs(job, datetime.now(UTC), 5)]
        assert elapses == expected, (name, calendar, shown.stdout)


def test_a_job_cron_cannot_express_as_a_timer_is_refused(tmp_path):
    config = tmp_path / "opsdb.toml"
    config.write_text('[schedule.odd]\ncron = "0 3 1 * 1"\ncommand = "heartbeat"\n')
    result = opsdb("schedule", "systemd", "--config", str(config))
    assert result.returncode == 2
    assert "day of month and the weekday" in result.stderr and "hint: split it" in result.stderr
