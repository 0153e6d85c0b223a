"""Playbooks: the shipped ones parse as opsdb command lines; invalid ones are refused before any step
runs; runs log each step, honour on_failure, and summarise (JSON with --json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from opsdb.automation import playbook as pb
from opsdb.cli.app import app
from opsdb.cli.commands.schedule import check_command_line, command_names
from opsdb.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "playbooks").glob("*.yaml"))


@pytest.fixture(scope="module")
def ctx():
    command = typer.main.get_command(app)
    return command.make_context("opsdb", ["check"], resilient_parsing=True)


def test_the_four_playbooks_ship():
    assert {p.stem for p in SHIPPED} >= {"nightly", "restore-drill", "incident-pitr", "replica-rebuild"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_step_parses_as_an_opsdb_command_line(path, ctx):
    book = pb.load(path, lambda words: check_command_line(ctx, words))
    names = command_names(ctx)
    for step in book.steps:
        first = next(w for w in step.run if not w.startswith("-") and not w.startswith("{"))
        assert first in names, f"{path.name}: {step.name}: {first}"
        assert step.description, f"{path.name}: {step.name} has no description"
    assert book.description


def test_check_command_line_refuses_bad_lines(ctx):
    check_command_line(ctx, ("retention", "apply", "--dry-run"))
    for words, message in [
        (("bakcup",), "No such command"),
        (("retention", "apply", "--dryrun"), "No such option"),
        (("retention",), "`opsdb retention`"),
        (("restore",), "Missing option"),
    ]:
        with pytest.raises(UsageError, match=message):
            check_command_line(ctx, words)


def write(tmp_path: Path, text: str, name: str = "book.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """
name: keys
description: make two keys
variables:
  dir: {description: where keys go, required: true}
  first: {default: k1.key}
steps:
  - name: one
    description: first key
    run: key generate {dir}/{first}
  - name: again
    description: the same path again fails (refuses to overwrite)
    run: key generate {dir}/{first}
    on_failure: "%s"
  - name: two
    description: second key
    run: key generate {dir}/k2.key
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: []", "steps: must be a non-empty list"),
        ("[1, 2]", "top level: must be a mapping"),
        ("steps:\n  - run: backup\n    when: always", "steps[1].when: unknown key"),
        ("steps:\n  - run: dump --database {db}", "steps[1].run: uses undeclared variable {db}"),
        ("steps:\n  - name: a\n    run: backup\n  - name: a\n    run: dump", "duplicate step name 'a'"),
        ("steps:\n  - run: backup\n    confirm: maybe", "steps[1].confirm: must be true or false"),
        ("steps:\n  - run: backup\n    timeout: soon", "steps[1].timeout: invalid duration"),
        ("steps:\n  - run: ''", "steps[1].run: must be a non-empty string"),
        ("steps:\n  - run: backup: now", "not valid YAML (line 2"),
        ("extra: 1\nsteps:\n  - run: backup", "extra: unknown key"),
        ("variables:\n  bad-name: 1\nsteps:\n  - run: backup", "variables.bad-name"),
    ],
)
def test_invalid_playbooks_are_refused(tmp_path, text, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("{", r"\{").replace("(", r"\(")):
        pb.load(write(tmp_path, text))


def test_resolve_variables(tmp_path):
    book = pb.load(write(tmp_path, GOOD % "stop"))
    with pytest.raises(UsageError, match="variable 'dir' has no default"):
        book.resolve({})
    with pytest.raises(UsageError, match="unknown variable 'dri'"):
        book.resolve({"dri": "x"})
    values = book.resolve({"dir": "/tmp/my keys"})
    assert book.command(book.steps[0], values) == ("key", "generate", "/tmp/my keys/k1.key")  # one argument
    with pytest.raises(UsageError, match="use name=value"):
        pb.parse_var_args(["novalue"])


def opsdb(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "opsdb.toml"
    config.write_text(f'[repository]\nurl = "file://{tmp_path}/repo"\n')
    return subprocess.run(
        [sys.executable, "-m", "opsdb", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_invalid_playbook_runs_nothing(tmp_path):
    bad = GOOD.replace("run: key generate {dir}/k2.key", "run: key generat {dir}/k2.key") % "stop"
    proc = opsdb(tmp_path, "playbook", "run", str(write(tmp_path, bad)), "--var", f"dir={tmp_path}")
    assert proc.returncode == 2
    assert "steps[3] (two).run" in proc.stderr and "No such command" in proc.stderr
    assert not (tmp_path / "k1.key").exists()
    missing = opsdb(tmp_path, "playbook", "run", str(write(tmp_path, GOOD % "stop")))
    assert missing.returncode == 2 and "--var dir=VALUE" in missing.stderr
    assert not (tmp_path / "k1.key").exists()


def test_run_stops_on_failure_with_the_instruction(tmp_path):
    book = write(tmp_path, GOOD % "Remove the old key first.")
    log = tmp_path / "run.log"
    proc = opsdb(tmp_path, "--json", "playbook", "run", str(book), "--var", f"dir={tmp_path}", "--log-file", str(log))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["result"] == "failed"
    assert [(s["name"], s["status"]) for s in doc["steps"]] == [("one", "ok"), ("again", "failed"), ("two", "not_run")]
    assert doc["steps"][1]["instruction"] == "Remove the old key first."
    assert "refus" in doc["steps"][1]["output_tail"] or "exists" in doc["steps"][1]["output_tail"]
    assert (tmp_path / "k1.key").exists() and not (tmp_path / "k2.key").exists()
    text = log.read_text()
    assert "=== " in text and "step again: opsdb key generate" in text
    assert "what to do: Remove the old key first." in proc.stderr


def test_run_continues_when_told(tmp_path):
    proc = opsdb(tmp_path, "playbook", "run", str(write(tmp_path, GOOD % "continue")), "--var", f"dir={tmp_path}")
    assert proc.returncode == 1  # a failed step still makes the run fail
    assert "failed" in proc.stdout and (tmp_path / "k2.key").exists()
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("playbook keys: failed")
    assert [line.split()[0] for line in lines[1:4]] == ["ok", "failed", "ok"]


def test_confirm_step_is_declined_without_a_terminal(tmp_path):
    text = (
        GOOD.replace("    description: second key\n", "    description: second key\n    confirm: true\n") % "continue"
    )
    proc = opsdb(tmp_path, "playbook", "run", str(write(tmp_path, text)), "--var", f"dir={tmp_path}")
    assert "needs confirmation" in proc.stderr and not (tmp_path / "k2.key").exists()
    (tmp_path / "b").mkdir()
    yes = opsdb(
        tmp_path, "playbook", "run", str(write(tmp_path, text, "b2.yaml")), "--var", f"dir={tmp_path}/b", "--yes"
    )
    assert (tmp_path / "b" / "k2.key").exists(), yes.stderr


def test_show_is_a_markdown_runbook(tmp_path):
    proc = opsdb(tmp_path, "playbook", "show", str(write(tmp_path, GOOD % "Remove the old key first.")))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("# Runbook: keys")
    assert "| `dir` | **required** | where keys go |" in out
    assert "opsdb key generate '{dir}/k1.key'" in out or "opsdb key generate {dir}/k1.key" in out
    assert "If it fails: Remove the old key first." in out
    shown = opsdb(tmp_path, "playbook", "show", str(write(tmp_path, GOOD % "stop")), "--var", "dir=/srv/keys")
    assert "opsdb key generate /srv/keys/k1.key" in shown.stdout
