"""Job validation, next-run computation across DST changes and timezones, crontab and Kubernetes exports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from opsdb.automation.schedule import (
    Job,
    crontab,
    job_argv,
    k8s_manifests,
    k8s_name,
    latest_slot,
    load_jobs,
    make_job,
    next_run,
    next_runs,
)
from opsdb.config import ScheduleJob
from opsdb.errors import ConfigError, UsageError

BERLIN = ZoneInfo("Europe/Berlin")
KNOWN = {"backup", "dump", "retention", "drill", "metrics", "schedule", "verify"}


def job(cron: str, tz: str = "UTC", command: str = "backup", **kw) -> Job:
    return make_job("nightly", ScheduleJob(cron=cron, command=command, timezone=tz, **kw), KNOWN)


def test_daily_job_in_a_timezone():
    j = job("0 2 * * *", "Europe/Berlin")
    runs = next_runs(j, datetime(2026, 1, 10, 12, tzinfo=UTC), 2)
    assert [r.isoformat() for r in runs] == ["2026-01-11T02:00:00+01:00", "2026-01-12T02:00:00+01:00"]
    assert runs[0].astimezone(UTC).hour == 1


def test_spring_forward_runs_a_skipped_time_once_right_after_the_jump():
    # Europe/Berlin 2026-03-29: 02:00 -> 03:00; 02:30 does not exist that night
    runs = next_runs(job("30 2 * * *", "Europe/Berlin"), datetime(2026, 3, 28, 12, tzinfo=BERLIN), 3)
    assert [r.isoformat() for r in runs] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert all(g > timedelta(hours=20) for g in gaps)


def test_fall_back_runs_a_fixed_time_job_once():
    # Europe/Berlin 2026-10-25: 03:00 -> 02:00; 02:30 happens twice
    runs = next_runs(job("30 2 * * *", "Europe/Berlin"), datetime(2026, 10, 24, 12, tzinfo=BERLIN), 3)
    assert [r.isoformat() for r in runs] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


def test_fall_back_interval_job_runs_in_both_repeated_hours():
    runs = next_runs(job("0 * * * *", "Europe/Berlin"), datetime(2026, 10, 25, 0, 30, tzinfo=BERLIN), 4)
    utc_hours = [r.astimezone(UTC).hour for r in runs]
    assert utc_hours == [23, 0, 1, 2]  # 01:00+02, 02:00+02, 02:00+01, 03:00+01: every real hour once
    assert len({r.astimezone(UTC) for r in runs}) == 4


def test_us_timezone_and_weekly_job():
    j = job("15 4 * * 0", "America/New_York")  # Sundays 04:15; US DST ends 2026-11-01
    runs = next_runs(j, datetime(2026, 10, 20, tzinfo=UTC), 3)
    assert [r.date().isoformat() for r in runs] == ["2026-10-25", "2026-11-01", "2026-11-08"]
    assert [r.utcoffset() for r in runs] == [timedelta(hours=-4), timedelta(hours=-5), timedelta(hours=-5)]
    assert all(r.hour == 4 and r.minute == 15 for r in runs)


def test_seconds_field_and_strictly_after():
    j = job("* * * * * */10")  # six fields: seconds last
    start = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert [r.second for r in next_runs(j, start, 3)] == [10, 20, 30]
    assert next_run(j, datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)).second == 20


def test_latest_slot():
    j = job("0 2 * * *")
    assert latest_slot(j, datetime(2026, 1, 5, 7, tzinfo=UTC)) == datetime(2026, 1, 5, 2, tzinfo=UTC)
    assert latest_slot(j, datetime(2026, 1, 5, 2, tzinfo=UTC)) == datetime(2026, 1, 5, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"cron": "61 2 * * *"}, "schedule.nightly: bad cron expression '61 2 * * *'"),
        ({"cron": "every night"}, "schedule.nightly: bad cron expression"),
        ({"cron": "0 2 * *"}, "schedule.nightly: bad cron expression"),
        ({"command": "bakcup"}, "schedule.nightly: unknown opsdb command 'bakcup'"),
        ({"command": ""}, "schedule.nightly: command is empty"),
        ({"command": "schedule run"}, "schedule.nightly: a job cannot run the scheduler itself"),
        ({"command": "backup 'unterminated"}, "schedule.nightly: cannot parse command"),
    ],
)
def test_bad_jobs_are_refused_naming_the_job(cfg, message):
    values = {"cron": "0 2 * * *", "command": "backup", **cfg}
    with pytest.raises(ConfigError) as info:
        make_job("nightly", values, KNOWN)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_bad_timezone_is_refused_naming_the_job():
    # the config model already refuses it; a job built from raw values is checked again
    with pytest.raises(Exception, match="unknown timezone 'Mars/Olympus'"):
        make_job("nightly", {"cron": "0 2 * * *", "command": "backup", "timezone": "Mars/Olympus"}, KNOWN)


def test_load_jobs_sorted_and_opsdb_prefix_dropped():
    jobs = load_jobs(
        {
            "b": ScheduleJob(cron="0 3 * * *", command="opsdb retention apply"),
            "a": ScheduleJob(cron="0 2 * * *", command="backup"),
        },
        KNOWN,
    )
    assert [j.name for j in jobs] == ["a", "b"]
    assert jobs[1].command == ("retention", "apply")


def test_job_argv():
    j = job("0 2 * * *", cluster="main")
    argv = job_argv(j, Path("/etc/opsdb/opsdb.toml"), program=("opsdb",))
    assert argv == ("opsdb", "--config", "/etc/opsdb/opsdb.toml", "--cluster", "main", "backup")
    assert job_argv(j, None)[1:4] == ("-I", "-m", "opsdb")


def test_crontab_lines():
    jobs = [
        job("0 2 * * *", "Europe/Berlin", cluster="main", timeout=timedelta(hours=2)),
        make_job("dump", ScheduleJob(cron="30 3 * * *", command="dump --database app", jitter="5m"), KNOWN),
    ]
    text = crontab(jobs, Path("/etc/opsdb/opsdb.toml"))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[0] == "CRON_TZ=Europe/Berlin"
    assert lines[1] == (
        "0 2 * * * flock -n /run/lock/opsdb-nightly.lock timeout 7200s opsdb --config /etc/opsdb/opsdb.toml --cluster main backup  # nightly"
    )
    assert lines[2] == "CRON_TZ=UTC"
    assert lines[3].startswith("30 3 * * * sleep $(awk ")
    assert lines[3].endswith("opsdb --config /etc/opsdb/opsdb.toml dump --database app  # dump")


def test_exports_refuse_seconds():
    with pytest.raises(UsageError, match="schedule.nightly: .* seconds field"):
        crontab([job("*/5 * * * * *")], None)
    with pytest.raises(UsageError, match="seconds field"):
        k8s_manifests([job("*/5 * * * * *")], image="opsdb:1")


def test_k8s_manifests():
    jobs = [
        job("0 2 * * *", "Europe/Berlin", cluster="main", timeout=timedelta(hours=1)),
        make_job("Retention_Run", ScheduleJob(cron="0 4 * * *", command="retention apply"), KNOWN),
    ]
    docs = list(
        yaml.safe_load_all(k8s_manifests(jobs, image="ghcr.io/x/opsdb:1.0", config_kind="Secret", namespace="db"))
    )
    assert len(docs) == 2
    first = docs[0]
    assert first["kind"] == "CronJob" and first["apiVersion"] == "batch/v1"
    assert first["metadata"] == {
        "name": "opsdb-nightly",
        "labels": {"app.kubernetes.io/name": "opsdb"},
        "namespace": "db",
    }
    spec = first["spec"]
    assert spec["schedule"] == "0 2 * * *" and spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 3600
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/x/opsdb:1.0"
    assert container["args"] == ["--config", "/etc/opsdb/opsdb.toml", "--cluster", "main", "backup"]
    assert container["volumeMounts"] == [{"name": "config", "mountPath": "/etc/opsdb", "readOnly": True}]
    assert pod["volumes"] == [{"name": "config", "secret": {"secretName": "opsdb-config", "defaultMode": 0o400}}]
    assert pod["restartPolicy"] == "Never"
    assert docs[1]["metadata"]["name"] == k8s_name(jobs[1]) == "opsdb-retention-run"
    with pytest.raises(UsageError):
        k8s_manifests(jobs, image="x", config_kind="Volume")
