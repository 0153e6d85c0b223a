"""opsdb completion bash|zsh: the shell completion script (Typer's completion protocol, Click underneath).

The script calls `opsdb` with $_OPSDB_COMPLETE set; cli/app.py answers such calls before any command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer
from typer import _click as click  # typer vendors click

from opsdb.errors import UsageError

COMPLETE_VAR = "_OPSDB_COMPLETE"
SHELLS = ("bash", "zsh")


def enable() -> None:
    """Register Typer's completion classes (bash, zsh, ...) with Click's completion machinery."""
    from typer._completion_classes import completion_init

    completion_init()


def script(root: click.Command, shell: str) -> str:
    from typer._click import shell_completion

    if shell not in SHELLS:
        raise UsageError(f"no completion for shell {shell!r}", hint=f"use one of: {', '.join(SHELLS)}")
    enable()
    completion_class = shell_completion.get_completion_class(shell)
    assert completion_class is not None
    return completion_class(root, {}, "opsdb", COMPLETE_VAR).source()


def register(app: typer.Typer) -> None:
    @app.command("completion")
    def completion(
        ctx: typer.Context,
        shell: Annotated[str, typer.Argument(metavar="bash|zsh", help="The shell to complete in.")],
    ) -> None:
        """Print the shell completion script for bash or zsh.

        bash: opsdb completion bash > /etc/bash_completion.d/opsdb (or `source <(opsdb completion bash)` in ~/.bashrc).
        zsh: opsdb completion zsh > "${fpath[1]}/_opsdb" (then start a new shell).
        """
        text = script(ctx.find_root().command, shell)
        typer.echo(text.strip("\n"))  # zsh wants `#compdef` on the first line
