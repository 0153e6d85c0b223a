"""Output rules: with --json exactly one JSON object on stdout; human text, progress and logs on stderr.

Human results (tables, summaries) go to stdout when --json is not given, so `| grep` works.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opsdb.cli import logs

if TYPE_CHECKING:
    from opsdb.cli.state import AppState
_json_emitted = False  # one JSON object per process on stdout: set by emit()
_for_a_program = False  # --json: a program reads the result, nobody watches a bar (set by the root callback)


def for_a_program(flag: bool) -> None:
    """With --json nothing but the result and the log lines: no progress bar even on a terminal."""
    global _for_a_program
    _for_a_program = flag


def emit(state: AppState, data: dict[str, Any], human: str | Callable[[], str] | None = None) -> None:
    """Print a command's result: JSON on stdout with --json, else the human text on stdout."""
    global _json_emitted
    if state.json:
        sys.stdout.write(json.dumps(data, default=str, sort_keys=False) + "\n")
        sys.stdout.flush()
        _json_emitted = True
        return
    text = human() if callable(human) else human
    if text:
        sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()


def info(message: str) -> None:
    """A human progress/status line on stderr (never on stdout)."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def failure(message: str, hint: str | None, exit_code: int, *, as_json: bool) -> None:
    """A failed command: `opsdb: error: ...` and `hint: ...` on stderr; with --json also one object on
    stdout whose `hint` is the same text, so scripts can read what went wrong and what to do (unless
    the command already printed its result, e.g. a failed drill's report: one object, never two)."""
    error_text(message)
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    else:
        hint = hint_in_text(message)
    if as_json and not _json_emitted:
        sys.stdout.write(json.dumps({"error": message, "hint": hint, "exit_code": exit_code}) + "\n")
        sys.stdout.flush()


# "invalid timeline 'x': use latest, current or a timeline number": many messages end with what to do
_IMPERATIVES = ("use", "pass", "set", "chmod", "run", "rerun", "add", "give", "create", "check", "remove", "install")


def hint_in_text(message: str) -> str | None:
    """The what-to-do part of a message that carries it in its text (after the last ': '), for --json."""
    head, sep, tail = message.rpartition(": ")
    if sep and head and tail.split(" ", 1)[0] in _IMPERATIVES:
        return tail
    return None


def error_text(message: str) -> None:
    sys.stderr.write(f"opsdb: error: {message}\n")
    sys.stderr.flush()


def is_terminal() -> bool:
    """Whether a person watches: stderr is a terminal and no --json was asked for."""
    return sys.stderr.isatty() and not _for_a_program


class ByteProgress:
    """The callback handed to an operation as `on_bytes`: counts bytes, and takes a total when the size
    becomes known (a restore's plan): `on_bytes.set_total(n)`. Without a terminal it only counts.
    `stage(description)` adds a bar below for a later stage measured as a position out of a total
    (the WAL a restored server replays)."""

    def __init__(self, total: int | None = None) -> None:
        self.done = 0
        self.total = total
        self.started = time.monotonic()
        self.base = 0  # where a position-measured stage stood when first seen (its rate counts from there)
        self.stopped: float | None = None  # when a later stage began: this stage's rate stays as it was
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, n: int) -> None:
        self.done += n
        self._show()

    def _show(self) -> None:
        if self._bar is not None:
            if self.total is not None and self.done > self.total:  # an estimate ran short: never past 100 %
                self.set_total(int(self.done * 1.05))
            self._bar.update(self._task, completed=self.done)

    def set_total(self, total: int | None) -> None:
        if self.done == 0:  # the work whose size this is starts now (a restore after its plan): so does the rate
            self.started = time.monotonic()
        self.total = total if total else None
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def rate(self) -> float:
        """Bytes per second since the command's work started: the measure the summary line uses too."""
        elapsed = (self.stopped or time.monotonic()) - self.started
        return (self.done - self.base) / elapsed if elapsed > 0 else 0.0

    def stage(self, description: str) -> Callable[[int, int | None], None]:
        """A callback (position, total) for a stage after this one, shown as its own bar; its rate and
        ETA count from the first position seen. Without a terminal it does nothing."""
        meter: ByteProgress | None = None

        def at(position: int, total: int | None) -> None:
            nonlocal meter
            if self._bar is None:
                return
            if meter is None:
                self.stopped = time.monotonic()  # the summary's rate is of this stage too (not of the next)
                meter = ByteProgress(total)
                meter.done = meter.base = position
                meter._bar = self._bar
                meter._task = self._bar.add_task(description, total=total, completed=position, meter=meter)
            meter.done = max(meter.done, position)
            meter._show()

        return at


def _rich_columns() -> tuple[Any, ...]:
    from rich.progress import BarColumn, ProgressColumn, TaskProgressColumn, TextColumn
    from rich.text import Text

    from opsdb.model.units import human_bytes

    class Amount(ProgressColumn):  # IEC units, as every opsdb summary
        def render(self, task: Any) -> Text:
            total = f"/{human_bytes(task.total)}" if task.total else ""
            return Text(f"{human_bytes(task.completed)}{total}", no_wrap=True)

    class Rate(ProgressColumn):  # the average since the start: the rate the summary line reports
        def render(self, task: Any) -> Text:
            return Text(f"{human_bytes(task.fields['meter'].rate())}/s", no_wrap=True)

    class Eta(ProgressColumn):
        def render(self, task: Any) -> Text:
            rate = task.fields["meter"].rate()
            if not (task.total and rate > 0):
                return Text("")
            left = max(0.0, (task.total - task.completed) / rate)
            return Text(f"ETA {int(left // 60)}:{int(left % 60):02d}", no_wrap=True)

    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        Amount(),
        Rate(),
        Eta(),
    )


@contextmanager
def progress(description: str, total: int | None = None, *, enabled: bool = True) -> Iterator[ByteProgress]:
    """A byte-progress bar on stderr when it is a terminal: percentage, IEC amounts, the average rate and an
    ETA when a total is known; nothing at all otherwise (cron, pipes, --json consumers)."""
    meter = ByteProgress(total)
    try:
        if not (enabled and is_terminal()):
            yield meter
            return
        from rich.console import Console
        from rich.progress import Progress

        with Progress(*_rich_columns(), console=Console(stderr=True), transient=True) as bar:
            meter._bar, meter._task = bar, bar.add_task(description, total=total, meter=meter)
            yield meter
    finally:
        meter.stopped = meter.stopped or time.monotonic()  # the work is over: its rate stays as it ended
        logs.CURRENT.bytes += meter.done
