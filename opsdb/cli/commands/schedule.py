"""opsdb schedule run|list|crontab|k8s, opsdb playbook run|show."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer import _click as click  # typer vendors click

from opsdb.automation import history as job_history
from opsdb.cli import output
from opsdb.errors import UsageError
from opsdb.proc import LocalRunner, python_module

if TYPE_CHECKING:
    from opsdb.automation.playbook import PlaybookResult, Step, StepResult
    from opsdb.automation.schedule import Job

# The automation modules (croniter, yaml, urllib.request, ...) are imported inside the commands:
# every opsdb command registers these, and backup/restore should not pay their start-up time and RSS.

StateDir = Annotated[
    str | None,
    typer.Option(
        "--state-dir",
        help=f"Job history and locks (else ${job_history.STATE_DIR_ENV}, else {job_history.DEFAULT_STATE_DIR}).",
    ),
]


OpsdbBin = Annotated[
    str | None,
    typer.Option("--opsdb-bin", metavar="PATH", help="The opsdb the jobs run (default: this one, absolute)."),
]
EnvFile = Annotated[
    str | None,
    typer.Option(
        "--env-file", metavar="PATH", help="VAR=value lines each job loads first (S3 credentials, OPSDB_ overrides)."
    ),
]


def _opsdb_bin(explicit: str | None) -> str:
    """An absolute path: cron's PATH (/usr/bin:/bin) and systemd's ExecStart= do not find a venv's opsdb."""
    if explicit:
        return explicit
    from opsdb.ops.recovery.pitr import opsdb_executable

    return os.path.abspath(opsdb_executable())


def command_names(ctx: typer.Context) -> set[str]:
    root = ctx.find_root()
    return set(root.command.list_commands(root))  # type: ignore[attr-defined]  # the root command is a group


def check_command_line(ctx: typer.Context, words: tuple[str, ...]) -> None:
    """Parse `opsdb <words>` with the real CLI (options, arguments, subcommands) without running it."""
    root = ctx.find_root()
    try:
        current = root.command.make_context("opsdb", list(words), parent=None)
        command = root.command
        while hasattr(command, "resolve_command"):
            rest = [*current._protected_args, *current.args]  # private: tests/unit/test_library_internals.py
            if not rest:
                raise click.exceptions.UsageError("missing command", ctx=current)
            name, sub, rest = command.resolve_command(current, rest)
            assert sub is not None and name is not None
            current = sub.make_context(name, rest, parent=current)
            command = sub
    except click.ClickException as exc:
        raise UsageError(f"`opsdb {' '.join(words)}`: {exc.format_message()}") from None


def _jobs(ctx: typer.Context) -> list[Job]:
    from opsdb.automation.schedule import load_jobs

    return load_jobs(ctx.obj.settings.schedule, command_names(ctx))


def _state(ctx: typer.Context, explicit: str | None) -> Path:
    return job_history.state_dir(explicit, ctx.obj.settings.scheduler.state_dir)


def register(app: typer.Typer) -> None:
    schedule = typer.Typer(help="Run the scheduler; export it to cron, systemd or k8s.", no_args_is_help=True)

    @schedule.command("run")
    def run(
        ctx: typer.Context,
        state_dir: StateDir = None,
        grace: Annotated[
            float | None,
            typer.Option("--grace", help="Seconds a running job may finish after SIGTERM (default [scheduler] grace)."),
        ] = None,
    ) -> None:
        """Run the scheduler in the foreground.

        A service's or a container's main process; SIGTERM stops it gracefully.
        """
        from opsdb.automation.notify import notify_job
        from opsdb.automation.scheduler import Scheduler, install_stop_signals, refresh_metrics_hook

        state, settings = ctx.obj, ctx.obj.settings
        jobs = _jobs(ctx)
        if not jobs:
            raise UsageError("no jobs configured", hint="add [schedule.NAME] sections with cron and command")
        runner = LocalRunner()
        textfile = settings.metrics.textfile

        def after_run(record: job_history.RunRecord) -> None:
            notify_job(
                settings.notify.webhook_url,
                record,
                on_success=settings.notify.on_success,
                timeout=settings.notify.timeout,
            )
            if textfile is not None:
                refresh_metrics_hook(runner, settings.config_path, textfile)

        scheduler = Scheduler(
            jobs, runner=runner, state=_state(ctx, state_dir), config_path=settings.config_path, after_run=after_run
        )
        install_stop_signals(scheduler)
        for name, (_, at) in sorted(scheduler.plan().items()):
            output.info(f"opsdb: job {name}: next run {at.astimezone(scheduler.jobs[name].tz).isoformat()}")
        scheduler.run(grace=grace if grace is not None else settings.scheduler.grace.total_seconds())
        output.emit(state, {"stopped": True}, "scheduler stopped")

    @schedule.command("list")
    def list_(
        ctx: typer.Context,
        count: Annotated[int, typer.Option("--count", min=1, max=50, help="Next run times per job.")] = 3,
        state_dir: StateDir = None,
    ) -> None:
        """List jobs with their next runs and last result."""
        from opsdb.automation.schedule import next_runs

        now = datetime.now(UTC)
        latest = job_history.JobHistory(_state(ctx, state_dir)).latest_per_job()
        rows = []
        for job in _jobs(ctx):
            last = latest.get(job.name)
            rows.append(
                {
                    "name": job.name,
                    "cron": job.cron,
                    "timezone": job.timezone,
                    "cluster": job.cluster,
                    "command": job.command_line,
                    "next_runs": [t.isoformat() for t in next_runs(job, now, count)],
                    "last": last.to_dict() if last else None,
                }
            )
        output.emit(ctx.obj, {"jobs": rows}, lambda: _render_list(rows))

    @schedule.command("crontab")
    def crontab_(
        ctx: typer.Context,
        opsdb_bin: OpsdbBin = None,
        lock_dir: Annotated[str, typer.Option("--lock-dir", help="Where flock files go.")] = "/run/lock",
        env_file: EnvFile = None,
    ) -> None:
        """Print the schedule as crontab lines.

        Install with: opsdb schedule crontab | crontab -u postgres -
        """
        from opsdb.automation.schedule import crontab

        text = crontab(
            _jobs(ctx),
            ctx.obj.settings.config_path,
            opsdb_bin=_opsdb_bin(opsdb_bin),
            lock_dir=lock_dir,
            env_file=env_file,
        )
        output.emit(ctx.obj, {"crontab": text}, text)

    @schedule.command("systemd")
    def systemd_(
        ctx: typer.Context,
        opsdb_bin: OpsdbBin = None,
        env_file: EnvFile = None,
        user: Annotated[str | None, typer.Option("--user", help="User= the jobs run as (e.g. postgres).")] = None,
        output_dir: Annotated[
            str | None,
            typer.Option("--output-dir", metavar="DIR", help="Write the unit files here (else print them)."),
        ] = None,
    ) -> None:
        """Export the schedule as systemd services and timers.

        One oneshot service and one timer per job. Install with: opsdb schedule systemd --output-dir
        /etc/systemd/system && systemctl daemon-reload && systemctl enable --now opsdb-NAME.timer
        """
        from opsdb.automation.schedule import systemd_units

        units = systemd_units(
            _jobs(ctx), ctx.obj.settings.config_path, opsdb_bin=_opsdb_bin(opsdb_bin), env_file=env_file, user=user
        )
        if output_dir:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            for name, text in units.items():
                (Path(output_dir) / name).write_text(text)
        human = "\n".join(f"wrote {Path(output_dir) / n}" for n in units) if output_dir else None
        if human is None:
            human = "\n".join(f"# --- {name}\n{text}" for name, text in units.items())
        output.emit(ctx.obj, {"units": units, "output_dir": output_dir}, human)

    @schedule.command("k8s")
    def k8s(
        ctx: typer.Context,
        image: Annotated[str, typer.Option("--image", help="The opsdb Docker image.")] = "opsdb:latest",
        config_map: Annotated[str | None, typer.Option("--config-map", help="ConfigMap holding opsdb.toml.")] = None,
        secret: Annotated[
            str | None, typer.Option("--secret", help="Secret holding opsdb.toml (instead of a ConfigMap).")
        ] = None,
        namespace: Annotated[str | None, typer.Option("--namespace", help="Namespace of the CronJobs.")] = None,
    ) -> None:
        """Print the schedule as Kubernetes CronJobs.

        concurrencyPolicy Forbid, the config mounted read-only.
        """
        if config_map and secret:
            raise UsageError("pass --config-map or --secret, not both")
        kind, name = ("Secret", secret) if secret else ("ConfigMap", config_map or "opsdb-config")
        from opsdb.automation.schedule import k8s_manifests

        text = k8s_manifests(_jobs(ctx), image=image, config_name=name, config_kind=kind, namespace=namespace)
        output.emit(ctx.obj, {"manifests": text}, text)

    app.add_typer(schedule, name="schedule")

    playbook = typer.Typer(help="Run and show playbooks (opsdb commands as runbooks).", no_args_is_help=True)

    @playbook.command("run")
    def playbook_run(
        ctx: typer.Context,
        file: Annotated[str, typer.Argument(help="Playbook YAML file.")],
        var: Annotated[list[str] | None, typer.Option("--var", help="name=value (repeatable).")] = None,
        log_file: Annotated[
            str | None, typer.Option("--log-file", help="Where step output goes (default: ./<name>-<time>.log).")
        ] = None,
        yes: Annotated[bool, typer.Option("--yes", help="Answer yes to steps that ask for confirmation.")] = False,
    ) -> None:
        """Run a playbook's steps in order.

        All of it is validated before the first step runs.
        """
        state = ctx.obj
        from opsdb.automation import playbook as playbooks

        book = playbooks.load(file, lambda words: check_command_line(ctx, words))
        values = book.resolve(playbooks.parse_var_args(var))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        log_path = Path(log_file) if log_file else Path(f"{book.name}-{stamp}.log")
        base = list(python_module("opsdb"))
        if state.settings.config_path is not None:
            base += ["--config", str(state.settings.config_path)]
        if state.cluster_name:
            base += ["--cluster", state.cluster_name]

        def confirm(step: Step, line: str) -> bool:
            if yes:
                return True
            if not sys.stdin.isatty():
                output.info(f"opsdb: step {step.name} needs confirmation: rerun with --yes or from a terminal")
                return False
            return typer.confirm(f"Run step {step.name}: opsdb {line}?", err=True)

        def progress(result: StepResult) -> None:
            output.info(
                f"opsdb: step {result.name}: {result.status} (exit {result.exit_code}) in {result.duration_seconds:.1f}s"
            )
            if result.instruction:
                output.info(f"opsdb: what to do: {result.instruction}")

        output.info(f"opsdb: playbook {book.name}: {len(book.steps)} steps, log in {log_path}")
        result = playbooks.run(
            book,
            values,
            runner=LocalRunner(),
            log_file=log_path,
            base_argv=tuple(base),
            confirm=confirm,
            on_step=progress,
        )
        output.emit(state, result.to_dict(), lambda: _render_result(result))
        if result.result != "ok":
            raise SystemExit(1)

    @playbook.command("show")
    def playbook_show(
        ctx: typer.Context,
        file: Annotated[str, typer.Argument(help="Playbook YAML file.")],
        var: Annotated[list[str] | None, typer.Option("--var", help="name=value (repeatable).")] = None,
    ) -> None:
        """Print a playbook as a Markdown runbook."""
        from opsdb.automation import playbook as playbooks

        book = playbooks.load(file, lambda words: check_command_line(ctx, words))
        given = playbooks.parse_var_args(var)
        book.resolve({**{v.name: "x" for v in book.variables}, **given})  # refuses unknown names only
        text = playbooks.runbook(book, given)
        output.emit(ctx.obj, {"playbook": book.name, "runbook": text}, text)

    app.add_typer(playbook, name="playbook")


def _render_list(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        last = row["last"]
        result = f"{last['status']} (exit {last['exit_code']}) at {last['end']}" if last else "never run"
        lines.append(f"{row['name']}: `opsdb {row['command']}`  cron '{row['cron']}' {row['timezone']}")
        lines.append(f"  next: {', '.join(row['next_runs'])}")
        lines.append(f"  last: {result}")
    return "\n".join(lines) or "no jobs configured"


def _render_result(result: PlaybookResult) -> str:
    lines = [f"playbook {result.playbook}: {result.result} in {result.duration_seconds:.1f}s (log: {result.log_file})"]
    for step in result.steps:
        code = "" if step.exit_code is None else f" exit {step.exit_code}"
        lines.append(f"  {step.status:<9} {step.name}{code}  opsdb {step.command}")
        if step.instruction:
            lines.append(f"            -> {step.instruction}")
    return "\n".join(lines)
