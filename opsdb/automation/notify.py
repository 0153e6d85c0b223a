"""Webhook notifications: a JSON POST on failed jobs (and on successes when asked), with urllib.

The message is one JSON object that chat webhooks (Slack, Mattermost: "text") and generic receivers
(the structured fields) can both use. Nothing secret goes in it: the command line is the opsdb
command from the config (no passwords travel in argv), and the output tail is what the job printed
on stderr, which opsdb keeps free of secrets.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from opsdb import __version__
from opsdb.automation.history import RunRecord
from opsdb.errors import OperationFailed, UsageError

TAIL_CHARS = 1500


def job_message(record: RunRecord, *, host: str | None = None) -> dict[str, Any]:
    host = host or socket.gethostname()
    verdict = "succeeded" if record.status == "ok" else f"{record.status} (exit {record.exit_code})"
    return {
        "text": f"opsdb job {record.job} on {host} {verdict}: `opsdb {record.command}`",
        "source": "opsdb",
        "version": __version__,
        "host": host,
        "job": record.job,
        "status": record.status,
        "exit_code": record.exit_code,
        "scheduled": record.scheduled,
        "start": record.start,
        "end": record.end,
        "duration_seconds": record.duration_seconds,
        "command": record.command,
        "output_tail": record.output_tail[-TAIL_CHARS:],
    }


def post_json(url: str, payload: dict[str, Any], *, timeout: float = 10.0) -> int:
    """POST payload as JSON; returns the HTTP status. OperationFailed on a network error or non-2xx."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"invalid webhook URL {redact(url)!r}: use http:// or https://")
    body = json.dumps(payload).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"opsdb/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # scheme checked above
            response.read(65536)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise OperationFailed(f"unable to post to webhook {redact(url)}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OperationFailed(f"unable to post to webhook {redact(url)}: {reason}") from None


def redact(url: str) -> str:
    """Webhook URLs often carry a token in the path or query: show only scheme and host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return (
        f"{parts.scheme}://{host}{port}/…"
        if parts.path not in ("", "/") or parts.query
        else f"{parts.scheme}://{host}{port}"
    )


def notify_job(url: str | None, record: RunRecord, *, on_success: bool = False, timeout: float = 10.0) -> bool:
    """Post the job's result when it failed (or succeeded and on_success). True when a message was sent."""
    if not url or record.status == "skipped":
        return False
    if record.status == "ok" and not on_success:
        return False
    post_json(url, job_message(record), timeout=timeout)
    return True
