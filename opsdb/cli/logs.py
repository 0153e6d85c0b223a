"""Log lines of a command: start (what, cluster, repository, key id), phases, end (result, bytes, duration).

At info level on stderr, as text (`opsdb: backup: start cluster=main ...`) or JSON lines (one object a
line with the same fields), and appended to `[log] file` when set: a template whose `{command}` (and
`{cluster}`) make one file per command kind, as pgBackRest keeps (`/var/log/opsdb/{cluster}-{command}.log`).
Fields travel as `extra={"fields": {...}}` so a text and a JSON line say the same thing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsdb.cli.state import AppState

log = logging.getLogger("opsdb")


def _fields_text(fields: dict[str, Any]) -> str:
    """key=value pairs (values with spaces quoted); event, command and phase are in the message already."""
    pairs = []
    for key, value in fields.items():
        if value is None or key in ("event", "command", "phase"):
            continue
        text = str(value)
        pairs.append(f"{key}={json.dumps(text) if ' ' in text else text}")
    return " ".join(pairs)


class TextFormatter(logging.Formatter):
    """`opsdb: message key=value ...`; with a timestamp and pid in files."""

    def __init__(self, *, stamped: bool = False) -> None:
        super().__init__()
        self.stamped = stamped

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        text = record.getMessage() + (f" {_fields_text(fields)}" if fields else "")
        if self.stamped:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
            return f"{stamp} opsdb[{record.process}] {record.levelname.lower()}: {text}"
        return f"opsdb: {text}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in (getattr(record, "fields", None) or {}).items() if v is not None})
        return json.dumps(doc, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed, not at run time
    """Writes to sys.stderr as it is at each record: while a progress bar runs, rich replaces it with a
    proxy that prints whole lines above the bar (a handler holding the original stream would draw over it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def setup(state: AppState, command: str) -> None:
    """stderr (text or JSON lines) and, with `[log] file`, the command kind's log file."""
    level = logging.DEBUG if state.debug else getattr(logging, state.log_level.upper(), logging.INFO)
    json_lines = state.log_format == "json"
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handlers: list[logging.Handler] = [handler]
    template = state.log_file
    if template:
        path = template.format(command=command.replace(" ", "-") or "opsdb", cluster=_cluster(state) or "all")
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
        to_file = logging.FileHandler(path, encoding="utf-8")
        to_file.setFormatter(JsonFormatter() if json_lines else TextFormatter(stamped=True))
        handlers.append(to_file)
    root = logging.getLogger("opsdb")
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = False


class CommandLog:
    """The start and end lines of one command, with the bytes its progress meters counted (the phases
    between them are logged by the operations: ops/common/phases.py)."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.started = time.monotonic()
        self.bytes = 0
        self.active = False

    def start(self, **fields: Any) -> None:
        self.active = True
        log.info("%s: start", self.command, extra={"fields": {"event": "start", "command": self.command, **fields}})

    def end(self, result: str, exit_code: int) -> None:
        if not self.active:
            return
        self.active = False
        seconds = round(time.monotonic() - self.started, 3)
        fields = {
            "event": "end",
            "command": self.command,
            "result": result,
            "exit_code": exit_code,
            "bytes": self.bytes or None,
            "duration_seconds": seconds,
        }
        level = logging.INFO if exit_code == 0 else logging.ERROR
        log.log(level, "%s: end", self.command, extra={"fields": fields})


CURRENT = CommandLog("")  # the command this process runs (cli/app.py replaces it before the command starts)


def begin(command: str) -> CommandLog:
    global CURRENT
    CURRENT = CommandLog(command)
    return CURRENT


def _cluster(state: AppState) -> str | None:
    clusters = state.settings.clusters
    return state.cluster_name or (next(iter(clusters)) if len(clusters) == 1 else None)


def start_fields(state: AppState) -> dict[str, Any]:
    """What a start line names: the cluster, the repository and the key id (never a secret)."""
    settings = state.settings
    cluster = _cluster(state)
    key_id: str | None = None
    try:
        from opsdb.ops.common.codec import encryption_key

        key = encryption_key(settings)
        key_id = key.id if key else "none"
    except Exception:  # an unreadable key is the command's own error to report, not the log line's
        key_id = "unreadable"
    return {"cluster": cluster, "repository": settings.repository.url, "key_id": key_id}
