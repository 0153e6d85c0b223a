"""Webhook notifications against a tiny http.server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from opsdb.automation.history import RunRecord
from opsdb.automation.notify import notify_job, post_json, redact
from opsdb.errors import OperationFailed, UsageError


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T0KEN"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def record(status: str, code: int | None = 1) -> RunRecord:
    return RunRecord(
        "nightly", "2026-11-21T02:00:00+00:00", "s", "e", code, status, 12.5, "backup", "pg_basebackup failed\n"
    )


def test_failed_job_is_posted(receiver):
    assert notify_job(receiver.url, record("failed"), timeout=5)
    ((path, headers, doc),) = receiver.requests
    assert path == "/hooks/T0KEN"
    assert headers["Content-Type"] == "application/json"
    assert doc["job"] == "nightly" and doc["status"] == "failed" and doc["exit_code"] == 1
    assert "failed (exit 1)" in doc["text"] and "pg_basebackup failed" in doc["output_tail"]


def test_success_only_when_asked(receiver):
    assert not notify_job(receiver.url, record("ok", 0))
    assert not notify_job(receiver.url, record("skipped", None), on_success=True)
    assert notify_job(receiver.url, record("ok", 0), on_success=True)
    assert [d["status"] for _, _, d in receiver.requests] == ["ok"]


def test_no_url_no_message():
    assert not notify_job(None, record("failed"))


def test_http_error_and_unreachable_are_operation_failures_without_the_token():
    bad = Receiver(status=500)
    try:
        with pytest.raises(OperationFailed, match="HTTP 500") as info:
            post_json(bad.url, {"x": 1}, timeout=5)
        assert "T0KEN" not in str(info.value)
    finally:
        bad.close()
    with pytest.raises(OperationFailed, match="unable to post"):
        post_json("http://127.0.0.1:9/hook", {"x": 1}, timeout=2)
    with pytest.raises(UsageError):
        post_json("ftp://example/x", {})


def test_redact():
    assert redact("https://hooks.example.com/services/T0/B1/XYZ") == "https://hooks.example.com/…"
    assert redact("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
