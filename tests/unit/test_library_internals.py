"""Every private internal of a library (or of CPython) that opsdb relies on, checked by name and shape.

pyproject.toml bounds these libraries above the versions checked here; an upgrade past a bound starts
with this file: when one of these fails, the named opsdb code needs changing, not the test."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys

import botocore.loaders
import typer
from typer import _click as click

from opsdb.storage.s3client import S3Loader


def test_botocore_loader_caches_load_data_with_path_under_the_key_storage_s3_overwrites() -> None:
    """storage/s3client.py `S3Loader.load_data_with_path` replaces the cached endpoints with the trimmed copy."""
    loader = S3Loader(None)
    data, path = loader.load_data_with_path("endpoints")
    assert loader._cache[("load_data_with_path", "endpoints")] == (data, path)
    assert loader._cache[("load_data_with_path", "endpoints")][0] is data
    assert {"s3"} >= {name for p in data["partitions"] for name in p["services"]}


def test_botocore_json_file_loader_reads_through_load_file() -> None:
    """storage/s3client.py `LeanJSONFileLoader` overrides `_load_file(full_path, open_method)`."""
    params = list(inspect.signature(botocore.loaders.JSONFileLoader._load_file).parameters)
    assert params == ["self", "full_path", "open_method"]
    model = S3Loader(None).load_service_model("s3", "service-2")
    assert type(model) is dict  # only our _load_file makes plain dicts (botocore's makes OrderedDicts)


def test_typer_vendors_click_as_typer_click() -> None:
    """cli/app.py, cli/commands/schedule.py and completion.py import click from `typer._click`."""
    for name in ("ClickException", "Command", "Context"):
        assert hasattr(click, name), name
    for name in ("UsageError", "NoSuchOption", "NoArgsIsHelpError"):
        assert hasattr(click.exceptions, name), name
    shell_completion = importlib.import_module("typer._click.shell_completion")
    assert callable(shell_completion.get_completion_class)


def test_typer_completion_classes_register_bash_and_zsh() -> None:
    """cli/commands/completion.py calls `typer._completion_classes.completion_init`."""
    from typer._click import shell_completion
    from typer._completion_classes import completion_init

    completion_init()
    for shell in ("bash", "zsh"):
        assert shell_completion.get_completion_class(shell) is not None, shell


def test_click_context_keeps_the_subcommand_in_protected_args() -> None:
    """cli/commands/schedule.py `check_command_line` walks subcommands through `Context._protected_args`."""
    app = typer.Typer()

    @app.command("first")
    def first(value: int = 0) -> None: ...

    @app.command("second")
    def second() -> None: ...

    root = typer.main.get_command(app)
    ctx = root.make_context("opsdb", ["first", "--value", "3"])
    assert ctx._protected_args == ["first"]
    assert ctx.args == ["--value", "3"]


def test_cpython_builtin_sha256_module_is_there() -> None:
    """ops/wal/spool.py `small_sha256` hashes without importing hashlib (OpenSSL) through `_sha256`/`_sha2`."""
    module = importlib.import_module("_sha2" if sys.version_info >= (3, 12) else "_sha256")
    assert module.sha256(b"opsdb").hexdigest() == hashlib.sha256(b"opsdb").hexdigest()
