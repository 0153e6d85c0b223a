"""The operator's view of the CLI: global options anywhere, plain --help, messages that say what to do,
shell completion, and helpers that start isolated from the working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opsdb.cli.app import click_command
from opsdb.cli.fastpath import GLOBAL_FLAGS, GLOBAL_VALUE_OPTIONS, _parse, hoist_global_options
from opsdb.cli.output import hint_in_text
from opsdb.proc import python_module
from opsdb.stream.crypto import generate_key_file, load_key
from tests.fakes import wal_segment

BIN = Path(sys.executable).with_name("opsdb")


def opsdb(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "opsdb", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=60
    )


def write_config(tmp_path: Path, *, key: bool = False) -> Path:
    lines = ["[repository]", f'url = "file://{tmp_path}/repo"', "[clusters.main]", 'conninfo = "host=127.0.0.1"']
    if key:
        generate_key_file(tmp_path / "key")
        lines += ["[encryption]", f'key_file = "{tmp_path}/key"', "required = true"]
    lines += ["[wal]", f'spool_dir = "{tmp_path}/spool"']
    path = tmp_path / "opsdb.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- 1. global options before or after the command -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["backup", "--config", "c.toml", "--json"], ["--config", "c.toml", "--json", "backup"]),
        (["--debug", "info", "--cluster=x"], ["--debug", "--cluster=x", "info"]),
        (
            ["schedule", "crontab", "-c", "c", "--log-format", "json"],
            ["-c", "c", "--log-format", "json", "schedule", "crontab"],
        ),
        (
            ["restore", "--target-dir", "/d", "--to-time", "t", "--json"],
            ["--json", "restore", "--target-dir", "/d", "--to-time", "t"],
        ),
        (["playbook", "run", "f", "--", "--json"], ["playbook", "run", "f", "--", "--json"]),
        (["wal-fetch", "A", "B", "--cluster", "main"], ["--cluster", "main", "wal-fetch", "A", "B"]),
    ],
)
def test_global_options_are_hoisted_in_front_of_the_command(args, expected):
    assert hoist_global_options(args) == expected


def test_the_wal_fast_path_takes_global_options_after_the_command():
    opts, command, rest = _parse(["wal-fetch", "000000010000000000000001", "pg_wal/x", "--config", "c.toml", "--json"])
    assert (command, rest) == ("wal-fetch", ["000000010000000000000001", "pg_wal/x"])
    assert opts["--config"] == "c.toml" and opts["--json"] is True


def test_no_command_defines_an_option_named_like_a_global_one():
    """Hoisting is generic (other commands' new options keep working) as long as no command reuses a name."""
    reserved = set(GLOBAL_VALUE_OPTIONS) | set(GLOBAL_FLAGS)
    root = click_command()
    todo = list(root.commands.items())
    while todo:
        name, command = todo.pop()
        for param in command.params:
            assert not reserved & set(param.opts), f"{name}: {param.opts} clashes with a global option"
        todo += [(f"{name} {n}", c) for n, c in getattr(command, "commands", {}).items()]


def test_options_after_the_command_work_like_before(tmp_path):
    config = write_config(tmp_path)
    before = opsdb("--config", str(config), "--json", "backups", "list")
    after = opsdb("backups", "list", "--config", str(config), "--json")
    assert before.returncode == after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)
    equals = opsdb("backups", "list", f"--config={config}", "--json")
    assert equals.returncode == 0 and json.loads(equals.stdout) == json.loads(before.stdout)


def test_wal_push_and_fetch_take_options_after_the_command(tmp_path):
    config = write_config(tmp_path)
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(wal_segment(segment.name))
    pushed = opsdb("wal-push", str(segment), "--config", str(config), "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["stored"] is True
    fetched = opsdb("wal-fetch", segment.name, str(tmp_path / "back"), "--config", str(config))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "back").read_bytes() == segment.read_bytes()
    result = opsdb("wal-fetch", "000000010000000000000009", str(tmp_path / "x"), "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert "No such option" not in result.stderr


# --- 5. --help reads as a Unix tool's -----------------------------------------------------------------


def _all_commands():
    root = click_command()
    todo = [((), root)]
    while todo:
        path, command = todo.pop()
        yield path
        todo += [((*path, n), c) for n, c in getattr(command, "commands", {}).items()]


def test_help_has_no_type_metavars_on_flags_and_one_line_descriptions():
    for path in _all_commands():
        result = opsdb(*path, "--help")
        assert result.returncode == 0, (path, result.stderr)
        assert "<bool>" not in result.stdout, path
        assert "╭" not in result.stdout, path  # plain text, not boxes
        if "Commands:" in result.stdout:  # each command's one line fits: not cut off with "..."
            assert not any(line.endswith("...") for line in result.stdout.split("Commands:")[1].splitlines()), path


def test_replicas_create_is_in_the_replicas_group_and_replica_create_stays_a_hidden_alias():
    top = opsdb("--help").stdout
    assert " replicas " in top and " replica " not in top
    assert "create" in opsdb("replicas", "--help").stdout
    assert opsdb("replica", "create", "--help").returncode == 0
    assert opsdb("replicas", "create", "--help").stdout == opsdb("replica", "create", "--help").stdout.replace(
        "opsdb replica create", "opsdb replicas create"
    )


def test_a_root_only_option_after_the_command_says_where_it_goes():
    result = opsdb("backup", "--version")
    assert result.returncode == 2
    assert "hint: --version goes before the command" in result.stderr


# --- 6. messages that say what to do ------------------------------------------------------------------


def test_no_config_file_says_none_was_found_and_where_it_looked(tmp_path):
    result = opsdb("backup", "--json", cwd=tmp_path)
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert "no config file found" in doc["error"]
    assert str(tmp_path / "opsdb.toml") in doc["error"] and "/etc/opsdb/opsdb.toml" in doc["error"]
    assert doc["hint"] and "--config" in doc["hint"]


def test_json_errors_fill_hint_from_the_text(tmp_path):
    config = write_config(tmp_path)
    result = opsdb(
        "restore", "--target-dir", str(tmp_path / "t"), "--timeline", "zz", "--json", "--config", str(config)
    )
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert doc["hint"] == "use latest, current or a timeline number"
    usage = json.loads(opsdb("--json", "backup", "--bogus").stdout)
    assert usage["hint"] == "see 'opsdb backup --help'"
    assert hint_in_text("unknown cluster 'x' (configured: a)") is None


def test_a_missing_key_on_a_read_path_names_the_key_id_instead_of_suggesting_a_new_key(tmp_path):
    config = write_config(tmp_path, key=True)
    key_id = load_key(key_file=tmp_path / "key").id
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(wal_segment(segment.name))
    pushed = subprocess.run(
        [str(BIN) if BIN.exists() else sys.executable, *([] if BIN.exists() else ["-m", "opsdb"])]
        + ["--config", str(config), "wal-push", str(segment)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pushed.returncode == 0, pushed.stderr
    (tmp_path / "key").unlink()
    result = opsdb("info", "--config", str(config), "--json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert key_id in doc["hint"], doc
    assert "key generate" not in doc["hint"].replace("a new key from `opsdb key generate` cannot", "")


# --- 9. helpers start isolated from the working directory ----------------------------------------------


def test_helpers_start_isolated_from_a_working_directory_holding_an_opsdb_folder(tmp_path):
    shadow = tmp_path / "opsdb"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")  # no __version__: importing it breaks opsdb's start
    (shadow / "cli").mkdir()
    (shadow / "cli" / "__init__.py").write_text("")
    plain = subprocess.run([sys.executable, "-m", "opsdb", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert plain.returncode != 0  # the trap is real: without isolation the folder shadows the package
    for module in ("opsdb", "opsdb.cli.fastpath"):
        isolated = subprocess.run(
            [*python_module(module), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert isolated.returncode == 0, isolated.stderr
        assert isolated.stdout.startswith("opsdb ")


# --- 10. shell completion ------------------------------------------------------------------------------


def _path_with_opsdb(tmp_path: Path) -> str:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "opsdb"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m opsdb "$@"\n')
    wrapper.chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}"


def test_bash_completion_completes_commands_subcommands_and_options(tmp_path):
    bash = shutil.which("bash")
    assert bash, "bash is part of the base system"
    script = tmp_path / "opsdb.bash"
    result = opsdb("completion", "bash")
    assert result.returncode == 0
    script.write_text(result.stdout)
    probe = (
        f"source {script}\n"
        'complete_line() { COMP_WORDS=($@); COMP_CWORD=$(($# - 1)); _opsdb_completion opsdb; echo "${COMPREPLY[*]}"; }\n'
        "complete_line opsdb ba\ncomplete_line opsdb replicas c\ncomplete_line opsdb backup --from-s\n"
    )
    env = {**os.environ, "PATH": _path_with_opsdb(tmp_path)}
    out = subprocess.run([bash, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    lines = out.stdout.splitlines()
    assert lines == ["backup backups", "check create", "--from-standby"], out


def test_zsh_completion_script_and_protocol(tmp_path):
    result = opsdb("completion", "zsh")
    assert result.returncode == 0
    assert result.stdout.startswith("#compdef opsdb") and "compdef _opsdb_completion opsdb" in result.stdout
    # the script evals what opsdb answers for the words typed so far
    answer = opsdb(env={"_OPSDB_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "opsdb schedule cr"})
    assert "crontab" in answer.stdout and "run" not in answer.stdout.replace("crontab", "")
    zsh = shutil.which("zsh")
    if zsh is None:
        return  # the answer above is what zsh's _opsdb_completion evals; zsh itself is not installed here
    script = tmp_path / "_opsdb"
    script.write_text(result.stdout)
    probe = f"autoload -U compinit && compinit -u && source {script} && print -r -- ${{+functions[_opsdb_completion]}}"
    env = {**os.environ, "PATH": _path_with_opsdb(tmp_path)}
    out = subprocess.run([zsh, "-f", "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "1", out


def test_completion_for_an_unknown_shell_is_a_usage_error():
    result = opsdb("completion", "fish")
    assert result.returncode == 2
    assert "use one of: bash, zsh" in result.stderr
