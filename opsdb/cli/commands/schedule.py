"""opsdb schedule run|list|crontab|k8s, opsdb playbook run|show."""

from __future__ import annotations

from typing import Annotated

import typer

from opsdb.cli.commands import not_built


def register(app: typer.Typer) -> None:
    schedule = typer.Typer(help="The built-in scheduler and its exports.", no_args_is_help=True)

    @schedule.command("run")
    def run(ctx: typer.Context) -> None:
        """Run the scheduler in the foreground."""
        raise not_built("schedule run")

    @schedule.command("list")
    def list_(ctx: typer.Context) -> None:
        """Jobs with their next run times and last result."""
        raise not_built("schedule list")

    @schedule.command("crontab")
    def crontab(ctx: typer.Context) -> None:
        """The schedule as crontab lines."""
        raise not_built("schedule crontab")

    @schedule.command("k8s")
    def k8s(ctx: typer.Context) -> None:
        """The schedule as Kubernetes CronJob manifests."""
        raise not_built("schedule k8s")

    app.add_typer(schedule, name="schedule")

    playbook = typer.Typer(help="Playbooks: opsdb command sequences as runbooks.", no_args_is_help=True)

    @playbook.command("run")
    def playbook_run(
        ctx: typer.Context,
        file: Annotated[str, typer.Argument(help="Playbook YAML file.")],
        var: Annotated[list[str] | None, typer.Option("--var", help="name=value (repeatable).")] = None,
    ) -> None:
        """Run a playbook's steps."""
        raise not_built("playbook run")

    @playbook.command("show")
    def playbook_show(
        ctx: typer.Context,
        file: Annotated[str, typer.Argument(help="Playbook YAML file.")],
        var: Annotated[list[str] | None, typer.Option("--var", help="name=value (repeatable).")] = None,
    ) -> None:
        """Print a playbook as a readable runbook."""
        raise not_built("playbook show")

    app.add_typer(playbook, name="playbook")
