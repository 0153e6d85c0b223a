"""Playbooks: YAML files of opsdb command lines that run as a sequence or print as a runbook.

    name: nightly
    description: Nightly backup, dump, retention and verification.
    variables:
      database: {default: app, description: the database to dump}
    steps:
      - name: backup
        description: Physical base backup.
        run: backup
        on_failure: stop          # stop (default) | continue | a message telling the operator what to do
      - name: dump
        run: dump --database {database}
        confirm: true             # ask before running (refused without a terminal unless --yes)
        timeout: 2h

`{name}` is filled from `--var name=value` or the declared default, inside one argument at a time, so a
value with spaces never becomes extra arguments. Everything is checked before the first step runs:
unknown keys, undeclared or missing variables, and (through the CLI's parser) every step's command line.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from opsdb.automation.history import read_tail
from opsdb.errors import OpsdbError, UsageError
from opsdb.model.units import parse_duration
from opsdb.proc import Cmd, Runner

_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP_KEYS = {"name", "description", "variables", "steps"}
_STEP_KEYS = {"name", "description", "run", "on_failure", "confirm", "timeout"}
_VAR_KEYS = {"default", "description", "required"}


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str
    default: str | None = None
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    run: tuple[str, ...]  # template words, placeholders unfilled
    description: str = ""
    on_failure: str = "stop"  # stop | continue | an instruction (stops after printing it)
    confirm: bool = False
    timeout: timedelta | None = None

    @property
    def stops_on_failure(self) -> bool:
        return self.on_failure != "continue"

    @property
    def instruction(self) -> str | None:
        return None if self.on_failure in ("stop", "continue") else self.on_failure


@dataclasses.dataclass(frozen=True)
class Playbook:
    path: Path
    name: str
    description: str
    variables: tuple[Variable, ...]
    steps: tuple[Step, ...]

    def resolve(self, given: Mapping[str, str]) -> dict[str, str]:
        """Declared defaults overlaid with `given`; UsageError for unknown or missing variables."""
        declared = {v.name: v for v in self.variables}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            known = ", ".join(sorted(declared)) or "none"
            raise UsageError(f"playbook {self.name}: unknown variable {unknown[0]!r} (declared: {known})")
        values = {n: v.default for n, v in declared.items() if v.default is not None}
        values.update(given)
        missing = [n for n in declared if n not in values]
        if missing:
            raise UsageError(
                f"playbook {self.name}: variable {missing[0]!r} has no default: pass --var {missing[0]}=VALUE"
            )
        return values

    def command(self, step: Step, values: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(_VAR.sub(lambda m: values[m.group(1)], word) for word in step.run)


def _invalid(path: Path, where: str, problem: str) -> UsageError:
    return UsageError(f"invalid playbook {path}: {where}: {problem}")


def _text(path: Path, where: str, value: Any, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool) or (required and not str(value).strip()):
        raise _invalid(path, where, "must be a non-empty string" if required else "must be a string")
    return str(value).strip()


def parse_var_args(pairs: Sequence[str] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not _VAR.fullmatch("{" + name + "}"):
            raise UsageError(f"invalid --var {pair!r}: use name=value")
        values[name] = value
    return values


def load(path: str | Path, check_command: Callable[[tuple[str, ...]], None] | None = None) -> Playbook:
    """Read and validate a playbook; UsageError (exit 2) naming the file and the place of the problem.

    check_command (from the CLI) parses one opsdb command line and raises UsageError if it is not one.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"unable to read playbook {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise UsageError(f"invalid playbook {path}: not valid YAML{where}: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise _invalid(path, "top level", "must be a mapping with name, description, variables and steps")
    for key in doc:
        if key not in _TOP_KEYS:
            raise _invalid(path, str(key), f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    name = _text(path, "name", doc.get("name") or path.stem, required=True)
    variables = _variables(path, doc.get("variables") or {})
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _invalid(path, "steps", "must be a non-empty list")
    declared = {v.name for v in variables}
    steps = [_step(path, i, raw, declared) for i, raw in enumerate(raw_steps, 1)]
    seen: set[str] = set()
    for i, step in enumerate(steps, 1):
        if step.name in seen:
            raise _invalid(path, f"steps[{i}].name", f"duplicate step name {step.name!r}")
        seen.add(step.name)
    playbook = Playbook(path, name, _text(path, "description", doc.get("description")), tuple(variables), tuple(steps))
    if check_command is not None:
        # check with placeholder values that are plausible for any option type
        sample = {v.name: v.default if v.default is not None else "1" for v in variables}
        for i, step in enumerate(steps, 1):
            try:
                check_command(playbook.command(step, sample))
            except UsageError as exc:
                raise _invalid(path, f"steps[{i}] ({step.name}).run", str(exc)) from None
    return playbook


def _variables(path: Path, raw: Any) -> list[Variable]:
    if not isinstance(raw, dict):
        raise _invalid(path, "variables", "must be a mapping of name to {default, description}")
    out = []
    for name, spec in raw.items():
        where = f"variables.{name}"
        if not isinstance(name, str) or not _VAR.fullmatch("{" + name + "}"):
            raise _invalid(path, where, "names use letters, digits and '_'")
        if not isinstance(spec, dict):  # shorthand: `name: default`
            spec = {"default": spec}
        for key in spec:
            if key not in _VAR_KEYS:
                raise _invalid(path, f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_VAR_KEYS))})")
        default = spec.get("default")
        if default is not None:
            default = _text(path, f"{where}.default", default)
        if spec.get("required"):
            default = None
        out.append(Variable(name, default, _text(path, f"{where}.description", spec.get("description"))))
    return out


def _step(path: Path, index: int, raw: Any, declared: set[str]) -> Step:
    where = f"steps[{index}]"
    if not isinstance(raw, dict):
        raise _invalid(path, where, "must be a mapping with run, description and on_failure")
    for key in raw:
        if key not in _STEP_KEYS:
            raise _invalid(path, f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_STEP_KEYS))})")
    run = _text(path, f"{where}.run", raw.get("run"), required=True)
    try:
        words = tuple(shlex.split(run))
    except ValueError as exc:
        raise _invalid(path, f"{where}.run", f"cannot parse {run!r}: {exc}") from None
    if words and words[0] == "opsdb":
        words = words[1:]
    if not words:
        raise _invalid(path, f"{where}.run", "is empty")
    for word in words:
        for var in _VAR.findall(word):
            if var not in declared:
                raise _invalid(path, f"{where}.run", f"uses undeclared variable {{{var}}}; declare it under variables")
    name = _text(path, f"{where}.name", raw.get("name") or f"step-{index}", required=True)
    on_failure = _text(path, f"{where}.on_failure", raw.get("on_failure") or "stop", required=True)
    confirm = raw.get("confirm", False)
    if not isinstance(confirm, bool):
        raise _invalid(path, f"{where}.confirm", "must be true or false")
    timeout = None
    if raw.get("timeout") is not None:
        try:
            timeout = parse_duration(raw["timeout"])
        except ValueError as exc:
            raise _invalid(path, f"{where}.timeout", str(exc)) from None
    return Step(name, words, _text(path, f"{where}.description", raw.get("description")), on_failure, confirm, timeout)


# --- running -----------------------------------------------------------------------------------


@dataclasses.dataclass
class StepResult:
    name: str
    command: str
    status: str  # ok | failed | declined | not_run
    exit_code: int | None = None
    duration_seconds: float = 0.0
    output_tail: str = ""
    instruction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PlaybookResult:
    playbook: str
    result: str  # ok | failed
    variables: dict[str, str]
    steps: list[StepResult]
    log_file: str
    started: str
    duration_seconds: float

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["steps"] = [s.to_dict() for s in self.steps]
        return doc


def run(
    playbook: Playbook,
    values: Mapping[str, str],
    *,
    runner: Runner,
    log_file: Path,
    base_argv: tuple[str, ...],
    confirm: Callable[[Step, str], bool] | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> PlaybookResult:
    """Run the steps in order; each is `base_argv + step words` (base_argv: python -m opsdb --config C ...).

    The child's stdout+stderr are appended to log_file, with a header line per step.
    """
    started, t0 = datetime.now(UTC), time.monotonic()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    results: list[StepResult] = []
    stopped = False
    for step in playbook.steps:
        words = playbook.command(step, values)
        line = shlex.join(words)
        if stopped:
            results.append(StepResult(step.name, line, "not_run"))
            continue
        if step.confirm and (confirm is None or not confirm(step, line)):
            results.append(
                StepResult(step.name, line, "declined", instruction="the operator declined; later steps were not run")
            )
            stopped = True
            continue
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(f"\n=== {datetime.now(UTC).isoformat()} step {step.name}: opsdb {line}\n")
        offset = log_file.stat().st_size
        s0 = time.monotonic()
        code = _run_step(runner, Cmd((*base_argv, *words)), log_file, step.timeout)
        tail = _tail_since(log_file, offset)
        result = StepResult(
            step.name, line, "ok" if code == 0 else "failed", code, round(time.monotonic() - s0, 3), tail
        )
        if code != 0:
            result.instruction = step.instruction
            stopped = step.stops_on_failure
        results.append(result)
        if on_step is not None:
            on_step(result)
    failed = any(r.status in ("failed", "declined") for r in results)
    return PlaybookResult(
        playbook.name,
        "failed" if failed else "ok",
        dict(values),
        results,
        str(log_file),
        started.isoformat(),
        round(time.monotonic() - t0, 3),
    )


def _run_step(runner: Runner, cmd: Cmd, log_file: Path, timeout: timedelta | None) -> int:
    try:
        handle = runner.spawn(cmd, log_path=log_file)
    except OpsdbError as exc:
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(f"{exc}\n")
        return 127
    limit = timeout.total_seconds() if timeout else None
    try:
        return handle.wait(timeout=limit)
    except Exception:  # the step ran past its timeout (TimeoutExpired) or waiting failed
        code = handle.terminate()
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(f"step timed out after {limit:g} s and was terminated\n")
        return code if code != 0 else 124


def _tail_since(path: Path, offset: int, limit: int = 2000) -> str:
    text = read_tail(path, limit=max(0, path.stat().st_size - offset))
    return text[-limit:]


# --- showing -----------------------------------------------------------------------------------


def runbook(playbook: Playbook, given: Mapping[str, str] | None = None) -> str:
    """The playbook as a Markdown runbook (placeholders filled where a value is known)."""
    declared = {v.name: v for v in playbook.variables}
    values = {n: v.default for n, v in declared.items() if v.default is not None}
    values.update(given or {})
    fill = {n: values.get(n, "{" + n + "}") for n in declared}
    lines = [f"# Runbook: {playbook.name}", ""]
    if playbook.description:
        lines += [playbook.description.strip(), ""]
    lines += [
        f"Run it: `opsdb playbook run {playbook.path}"
        + "".join(f" --var {n}=..." for n in declared if n not in values)
        + "`",
        "",
    ]
    if playbook.variables:
        lines += ["## Variables", "", "| name | value | description |", "| --- | --- | --- |"]
        for v in playbook.variables:
            shown = f"`{values[v.name]}`" if v.name in values else "**required**"
            lines.append(f"| `{v.name}` | {shown} | {v.description} |")
        lines.append("")
    lines += ["## Steps", ""]
    for i, step in enumerate(playbook.steps, 1):
        title = f"{i}. **{step.name}**" + (f": {step.description.strip()}" if step.description else "")
        lines += [title, "", "   ```sh", f"   opsdb {shlex.join(playbook.command(step, fill))}", "   ```", ""]
        extras = []
        if step.confirm:
            extras.append("asks for confirmation before running")
        if step.timeout:
            extras.append(f"timeout {step.timeout}")
        if extras:
            lines += [f"   ({'; '.join(extras)})", ""]
        failure = {"stop": "stop here.", "continue": "note it and continue."}.get(step.on_failure, step.on_failure)
        lines += [f"   If it fails: {failure}", ""]
    return "\n".join(lines).rstrip() + "\n"
