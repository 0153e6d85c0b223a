"""Scheduled jobs: cron expressions in each job's timezone, next runs, and exports for cron and Kubernetes.

The only croniter importer. A job's times are computed in its own timezone so "0 2 * * *" means 02:00
local time all year. Across DST changes (as cronie does): a fixed-time job whose time falls in the hour
that is skipped in spring runs once right after the jump, and one whose time falls in the hour that
repeats in autumn runs once (the first occurrence); a job whose hour field is a wildcard ("*", "*/2")
is an interval job and runs in both repeated hours. Six fields means seconds come last ("*/10" every
10 s), which the built-in scheduler supports and cron exports refuse.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import CroniterError, croniter

from opsdb.config import ScheduleJob
from opsdb.errors import ConfigError, UsageError
from opsdb.proc import python_module

# commands a job may not run: the scheduler itself (it would start a second loop)
FORBIDDEN_COMMANDS = {("schedule", "run")}


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    cron: str
    command: tuple[str, ...]  # the words after `opsdb [global options]`
    cluster: str | None = None
    timezone: str = "UTC"
    jitter: timedelta = timedelta(0)
    timeout: timedelta | None = None

    @property
    def tz(self) -> tzinfo:
        return ZoneInfo(self.timezone)

    @property
    def has_seconds(self) -> bool:
        return len(self.cron.split()) == 6

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


def _fail(job: str, problem: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"invalid configuration: schedule.{job}: {problem}", hint=hint)


def make_job(name: str, cfg: ScheduleJob | Mapping[str, Any], known_commands: Collection[str] | None = None) -> Job:
    """Validate one [schedule.NAME] entry. ConfigError (exit 2) names the job and what is wrong."""
    if not isinstance(cfg, ScheduleJob):
        cfg = ScheduleJob(**cfg)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
        raise _fail(name, "job names may use letters, digits, '-', '_' and '.' (at most 63 characters)")
    expr = " ".join(cfg.cron.split())
    try:
        if not croniter.is_valid(expr):
            croniter(expr)  # raises with croniter's own explanation
            raise CroniterError("not a valid expression")
    except (CroniterError, ValueError, KeyError) as exc:
        raise _fail(
            name, f"bad cron expression {cfg.cron!r}: {exc}", hint="use 5 fields (m h dom mon dow), e.g. '0 2 * * *'"
        ) from None
    try:
        ZoneInfo(cfg.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(
            name, f"unknown timezone {cfg.timezone!r}", hint="use an IANA name such as 'Europe/Berlin'"
        ) from None
    try:
        words = tuple(shlex.split(cfg.command))
    except ValueError as exc:
        raise _fail(name, f"cannot parse command {cfg.command!r}: {exc}") from None
    if not words:
        raise _fail(name, "command is empty")
    if words[0] == "opsdb":
        words = words[1:]  # "opsdb backup" and "backup" mean the same
    first = next((w for w in words if not w.startswith("-")), None)
    if known_commands is not None and first is not None and first not in known_commands:
        raise _fail(
            name,
            f"unknown opsdb command {first!r} in {cfg.command!r}",
            hint="a job runs `opsdb <command>`, e.g. 'backup'",
        )
    if first is not None and tuple(w for w in words if not w.startswith("-"))[:2] in FORBIDDEN_COMMANDS:
        raise _fail(name, "a job cannot run the scheduler itself")
    return Job(name, expr, words, cfg.cluster, cfg.timezone, cfg.jitter, cfg.timeout)


def load_jobs(schedule: Mapping[str, ScheduleJob], known_commands: Collection[str] | None = None) -> list[Job]:
    return [make_job(name, cfg, known_commands) for name, cfg in sorted(schedule.items())]


# --- run times --------------------------------------------------------------------------------


def _hour_is_wildcard(expr: str) -> bool:
    fields = expr.split()
    hour = fields[1] if len(fields) >= 5 else "*"
    return hour == "*" or hour.startswith("*/")


def _is_repeat(moment: datetime, tz: tzinfo) -> bool:
    """True for the second occurrence of a wall-clock time that happens twice (autumn DST change)."""
    naive = moment.replace(tzinfo=None)
    first = naive.replace(tzinfo=tz, fold=0).utcoffset()
    second = naive.replace(tzinfo=tz, fold=1).utcoffset()
    return first != second and moment.utcoffset() == second


def iter_runs(job: Job, after: datetime) -> Iterator[datetime]:
    """Run times strictly after `after` (aware), in the job's timezone, forever.

    Compare them after .astimezone(UTC): aware datetimes sharing a tzinfo compare by wall-clock time."""
    tz = job.tz
    start = after.astimezone(tz)
    it = croniter(job.cron, start)
    skip_repeats = not _hour_is_wildcard(job.cron)
    previous: datetime | None = None
    for _ in range(10_000_000):  # bounded: far beyond any real use
        moment: datetime = it.get_next(datetime)
        if skip_repeats and _is_repeat(moment, tz):
            continue
        # compared in UTC: two times with the same tzinfo compare as wall-clock times, ignoring DST folds
        instant = moment.astimezone(UTC)
        if previous is not None and instant <= previous:
            continue
        previous = instant
        yield moment


def next_runs(job: Job, after: datetime, count: int = 1) -> list[datetime]:
    runs = iter_runs(job, after)
    return [next(runs) for _ in range(count)]


def next_run(job: Job, after: datetime) -> datetime:
    return next(iter_runs(job, after))


def latest_slot(job: Job, moment: datetime) -> datetime:
    """The newest run time at or before `moment` (what a catch-up run after downtime stands for)."""
    previous: datetime = croniter(job.cron, moment.astimezone(job.tz)).get_prev(datetime)
    following = next_run(job, previous)
    return following if following.astimezone(UTC) <= moment.astimezone(UTC) else previous


# --- the command a job runs -------------------------------------------------------------------


def job_argv(job: Job, config_path: Path | None, *, program: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """`python -m opsdb --config C [--cluster X] <command...>` (the same interpreter as the scheduler)."""
    argv: list[str] = list(program or python_module("opsdb"))
    if config_path is not None:
        argv += ["--config", str(config_path)]
    if job.cluster:
        argv += ["--cluster", job.cluster]
    return (*argv, *job.command)


# --- exports ----------------------------------------------------------------------------------


def _exportable(job: Job, where: str) -> None:
    if job.has_seconds:
        raise UsageError(
            f"schedule.{job.name}: cron expression {job.cron!r} has a seconds field, which {where} does not support"
        )
    if len(job.cron.split()) == 7:
        raise UsageError(
            f"schedule.{job.name}: cron expression {job.cron!r} has a year field, which {where} does not support"
        )


def crontab(
    jobs: list[Job],
    config_path: Path | None,
    *,
    opsdb_bin: str = "opsdb",
    lock_dir: str = "/run/lock",
    env_file: str | None = None,
) -> str:
    """Crontab lines running the same schedule: CRON_TZ per timezone (cronie), flock against overlaps,
    `opsdb_bin` as an absolute path (cron's PATH is /usr/bin:/bin), and the variables of `env_file`
    (S3 credentials, OPSDB_ overrides) exported into each job."""
    lines = [
        "# opsdb schedule, generated by `opsdb schedule crontab`",
        "# CRON_TZ needs cronie (RHEL, Fedora, Arch) or systemd-cron; with Vixie/Debian cron, keep every job",
        "# in the system timezone. flock -n skips a run while the previous one is still going.",
    ]
    load_env = f"set -a && . {shlex.quote(env_file)} && set +a && " if env_file else ""
    current_tz = None
    for job in jobs:
        _exportable(job, "crontab")
        if job.timezone != current_tz:
            lines.append(f"CRON_TZ={job.timezone}")
            current_tz = job.timezone
        argv = list(job_argv(job, config_path, program=(opsdb_bin,)))
        prefix = ["flock", "-n", f"{lock_dir}/opsdb-{job.name}.lock"]
        if job.timeout is not None:
            prefix += ["timeout", f"{int(job.timeout.total_seconds())}s"]
        sleep = ""
        if job.jitter > timedelta(0):
            # cron has no jitter: a random sleep ($RANDOM is bash; cron's shell is /bin/sh, hence awk)
            sleep = f"sleep $(awk 'BEGIN{{srand(); print int(rand()*{int(job.jitter.total_seconds())})}}') && "
        command = shlex.join(prefix + argv).replace("%", "\\%")  # % is a newline in crontab
        lines.append(f"{job.cron} {load_env}{sleep}{command}  # {job.name}")
    return "\n".join(lines) + "\n"


# --- systemd ----------------------------------------------------------------------------------

_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def on_calendar(job: Job) -> str:
    """The job's cron expression as a systemd OnCalendar= value in the job's timezone."""
    fields = croniter(job.cron).expanded  # every field as its list of values, or ['*']

    def values(index: int, width: int) -> str:
        field = fields[index]
        return "*" if field == ["*"] else ",".join(f"{int(v):0{width}d}" for v in field)

    if fields[2] != ["*"] and fields[4] != ["*"]:
        # cron runs when EITHER the day of month or the weekday matches; systemd needs both
        raise UsageError(
            f"schedule.{job.name}: {job.cron!r} restricts both the day of month and the weekday, "
            "which systemd timers cannot express",
            hint="split it into two jobs, one per field",
        )
    weekdays = "" if fields[4] == ["*"] else ",".join(_WEEKDAYS[int(v) % 7] for v in fields[4]) + " "
    date = f"*-{values(3, 2)}-{values(2, 2)}"
    return f"{weekdays}{date} {values(1, 2)}:{values(0, 2)}:00 {job.timezone}"


def systemd_units(
    jobs: list[Job],
    config_path: Path | None,
    *,
    opsdb_bin: str,
    env_file: str | None = None,
    user: str | None = None,
) -> dict[str, str]:
    """A oneshot service and a timer per job (file name -> text). The timer is Persistent (a run missed
    while the machine was down happens once at boot, as the built-in scheduler does) and randomizes by
    the job's jitter; systemd never starts a second run of a service that is still running."""
    units: dict[str, str] = {}
    for job in jobs:
        _exportable(job, "systemd")
        name = k8s_name(job)
        argv = job_argv(job, config_path, program=(opsdb_bin,))
        service = [
            "[Unit]",
            f"Description=opsdb job {job.name}: opsdb {job.command_line.replace('%', '%%')}",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart={' '.join(_systemd_quote(a) for a in argv)}",
        ]
        if user:
            service.append(f"User={user}")
        if env_file:
            service.append(f"EnvironmentFile={env_file}")
        timeout = int(job.timeout.total_seconds()) if job.timeout is not None else 0
        service.append(f"TimeoutStartSec={timeout}s" if timeout else "TimeoutStartSec=infinity")
        timer = [
            "[Unit]",
            f"Description=opsdb job {job.name} ({job.cron} {job.timezone})",
            "",
            "[Timer]",
            f"OnCalendar={on_calendar(job)}",
            "Persistent=true",
            f"Unit={name}.service",
        ]
        if job.jitter > timedelta(0):
            timer.append(f"RandomizedDelaySec={int(job.jitter.total_seconds())}s")
        timer += ["", "[Install]", "WantedBy=timers.target"]
        units[f"{name}.service"] = "\n".join(service) + "\n"
        units[f"{name}.timer"] = "\n".join(timer) + "\n"
    return units


def _systemd_quote(arg: str) -> str:
    """ExecStart= words: double-quoted when needed; % and $ escaped (systemd expands specifiers)."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_./:=@+,-]+", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def k8s_name(job: Job) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", job.name.lower()).strip("-")
    return f"opsdb-{name}"[:52].rstrip("-")  # CronJob names are limited to 52 characters


def k8s_manifests(
    jobs: list[Job],
    *,
    image: str,
    config_name: str = "opsdb-config",
    config_kind: str = "ConfigMap",
    namespace: str | None = None,
    mount_dir: str = "/etc/opsdb",
    starting_deadline_seconds: int = 3600,
) -> str:
    """Kubernetes CronJobs (batch/v1) running the opsdb image, one per job, with the config mounted."""
    if config_kind not in ("ConfigMap", "Secret"):
        raise UsageError(f"config kind must be ConfigMap or Secret, not {config_kind!r}")
    docs = []
    for job in jobs:
        _exportable(job, "Kubernetes")
        config_file = Path(mount_dir) / "opsdb.toml"
        args = list(job_argv(job, config_file, program=("opsdb",)))[1:]  # the image's ENTRYPOINT is opsdb
        volume: dict[str, Any] = {"name": "config"}
        if config_kind == "ConfigMap":
            volume["configMap"] = {"name": config_name}
        else:
            volume["secret"] = {"secretName": config_name, "defaultMode": 0o400}
        job_spec: dict[str, Any] = {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "opsdb", "opsdb.io/job": job.name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "opsdb",
                            "image": image,
                            "args": args,
                            "volumeMounts": [{"name": "config", "mountPath": mount_dir, "readOnly": True}],
                        }
                    ],
                    "volumes": [volume],
                },
            },
        }
        if job.timeout is not None:
            job_spec["activeDeadlineSeconds"] = int(job.timeout.total_seconds())
        metadata: dict[str, Any] = {"name": k8s_name(job), "labels": {"app.kubernetes.io/name": "opsdb"}}
        if namespace:
            metadata["namespace"] = namespace
        docs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": metadata,
                "spec": {
                    "schedule": job.cron,
                    "timeZone": job.timezone,
                    # never two runs at once; a run missed by less than the deadline still starts once
                    "concurrencyPolicy": "Forbid",
                    "startingDeadlineSeconds": starting_deadline_seconds,
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"spec": job_spec},
                },
            }
        )
    header = "# opsdb schedule as Kubernetes CronJobs, generated by `opsdb schedule k8s`\n"
    return header + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)
