"""The WAL agent's socket protocol (ops/walagent.py) with a real Unix socket and a small handler double."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from opsdb.errors import IntegrityError, NotFound, OperationFailed
from opsdb.ops import walagent


class Agent:
    """serve() in a thread, as the background process runs it, with a handler that records requests."""

    def __init__(self, sock: Path, *, stale=lambda: False, idle_exit: float = 30.0) -> None:
        self.sock = sock
        self.requests: list[dict] = []
        self.served: int | None = None
        self.thread = threading.Thread(target=self._run, args=(stale, idle_exit), daemon=True)

    def handle(self, request: dict) -> dict:
        self.requests.append(request)
        if request.get("op") == "boom":
            raise RuntimeError("bug")
        if request.get("op") == "missing":
            return walagent.error_reply(NotFound("not archived"))
        return {"status": "ok", "echo": request.get("op")}

    def _run(self, stale, idle_exit) -> None:
        self.served = walagent.serve(self.sock, self.handle, stale=stale, idle_exit=idle_exit)

    def start(self):
        self.thread.start()
        return self.thread.is_alive

    def wait_listening(self) -> None:
        for _ in range(200):
            if os.path.exists(self.sock):
                return
            time.sleep(0.01)
        raise AssertionError("the agent did not start listening")


@pytest.fixture
def sock(tmp_path):
    return tmp_path / "spool" / "main" / "agent" / "push-test.sock"


def test_reply_from_a_listening_agent_without_starting_another(sock):
    agent = Agent(sock, idle_exit=0.5)
    agent.start()
    agent.wait_listening()

    def must_not_start():
        raise AssertionError("an agent listens: nothing should be started")

    assert walagent.call(sock, {"op": "push", "path": "/x"}, must_not_start, timeout=5) == {
        "status": "ok",
        "echo": "push",
    }
    assert agent.requests == [{"op": "push", "path": "/x"}]
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    agent.thread.join(10)
    assert agent.served == 1 and not sock.exists()  # idle exit removes the socket


def test_call_starts_an_agent_when_none_listens(sock):
    agent = Agent(sock, idle_exit=0.5)
    assert walagent.call(sock, {"op": "fetch"}, agent.start, timeout=5)["echo"] == "fetch"
    agent.thread.join(10)


def test_no_agent_possible_means_in_process(sock, tmp_path):
    assert walagent.call(sock, {"op": "push"}, lambda: lambda: False, timeout=5) is None
    blocked = tmp_path / "file"
    blocked.write_text("a file where the spool directory should be")
    assert walagent.call(blocked / "agent" / "x.sock", {"op": "push"}, lambda: lambda: True, timeout=5) is None


def test_error_replies_come_back_as_the_same_errors(sock):
    agent = Agent(sock, idle_exit=0.5)
    agent.start()
    agent.wait_listening()
    reply = walagent.call(sock, {"op": "missing"}, agent.start, timeout=5)
    with pytest.raises(NotFound, match="not archived"):
        walagent.raise_reply(reply)
    bug = walagent.call(sock, {"op": "boom"}, agent.start, timeout=5)
    with pytest.raises(OperationFailed, match="internal error in the WAL agent: RuntimeError: bug"):
        walagent.raise_reply(bug)
    assert walagent.call(sock, {"op": "after"}, agent.start, timeout=5)["echo"] == "after"  # still serving
    agent.thread.join(10)


def test_exit_code_and_hint_survive_the_socket():
    reply = walagent.error_reply(IntegrityError("tag mismatch", hint="check the key"))
    with pytest.raises(IntegrityError) as caught:
        walagent.raise_reply(reply)
    assert (caught.value.hint, caught.value.exit_code) == ("check the key", IntegrityError.exit_code)
    with pytest.raises(OperationFailed):
        walagent.raise_reply({"status": "error", "type": "NoSuchError", "message": "m", "exit_code": 1})


def test_stale_agent_hands_over_to_a_new_one(sock, tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"one")
    old = Agent(sock, stale=walagent.files_changed([str(key)]), idle_exit=30)
    old.start()
    old.wait_listening()
    assert walagent.call(sock, {"op": "a"}, old.start, timeout=5)["echo"] == "a"
    key.write_bytes(b"rotated key")  # the settings behind the running agent changed
    new = Agent(sock, idle_exit=0.5)
    assert walagent.call(sock, {"op": "b"}, new.start, timeout=5)["echo"] == "b"
    old.thread.join(10)
    assert not old.thread.is_alive() and [r["op"] for r in old.requests] == ["a"]
    assert [r["op"] for r in new.requests] == ["b"]
    new.thread.join(10)


def test_second_agent_on_the_same_socket_steps_aside(sock):
    first = Agent(sock, idle_exit=1.0)
    first.start()
    first.wait_listening()
    assert walagent.serve(sock, lambda r: {"status": "ok"}, idle_exit=0.1) == 0
    assert sock.exists()  # the running agent's socket is left alone
    first.thread.join(10)


def test_socket_path_follows_config_and_environment(tmp_path, monkeypatch):
    config = tmp_path / "opsdb.toml"
    config.write_text("[repository]\n")
    one = walagent.socket_path(str(tmp_path / "spool"), "main", "push", str(config))
    assert one == walagent.socket_path(str(tmp_path / "spool"), "main", "push", str(config))
    assert one != walagent.socket_path(str(tmp_path / "spool"), "main", "fetch", str(config))
    monkeypatch.setenv("OPSDB_REPOSITORY__URL", "file:///elsewhere")
    two = walagent.socket_path(str(tmp_path / "spool"), "main", "push", str(config))
    assert two != one
    os.utime(config, ns=(1, 1))
    assert walagent.socket_path(str(tmp_path / "spool"), "main", "push", str(config)) != two


def test_a_socket_deeper_than_sockaddr_allows_still_works(tmp_path):
    deep = tmp_path / ("d" * 90) / ("e" * 90)
    sock = walagent.socket_path(str(deep), "main", "push", None)
    assert len(str(sock)) > walagent.SUN_PATH_MAX
    agent = Agent(sock, idle_exit=0.5)
    assert walagent.call(sock, {"op": "deep"}, agent.start, timeout=5)["echo"] == "deep"
    assert os.path.exists(sock)
    agent.thread.join(10)


def test_no_writable_spool_means_in_process_with_a_warning(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    sock = str(blocker / "main" / "agent" / "push-x.sock")
    warnings: list[str] = []
    started: list[bool] = []

    def start():
        started.append(True)
        return lambda: True

    assert walagent.call(sock, {"op": "a"}, start, timeout=5, warn=warnings.append) is None
    assert not started and len(warnings) == 1 and "working in-process" in warnings[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="a caller of another uid needs root to set up")
def test_the_agent_serves_only_its_own_uid_others_are_told_to_work_in_process() -> None:
    base = Path(tempfile.mkdtemp(prefix="opsdb-agent-uid-", dir="/tmp"))
    base.chmod(0o755)
    sock = base / "agent" / "push-x.sock"
    handled: list[dict] = []
    agent = threading.Thread(
        target=walagent.serve,
        args=(str(sock), lambda req: handled.append(req) or {"status": "ok"}),
        kwargs={"idle_exit": 2.0},
        daemon=True,
    )
    agent.start()
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        sock.parent.chmod(0o755)
        sock.chmod(0o666)  # let the other uid reach the socket: only the peer check stands in its way
        root = str(Path(walagent.__file__).parents[2])
        code = (
            f"import sys; sys.path.insert(0, {root!r}); from opsdb.ops import walagent\n"
            f"try:\n    print(walagent._ask({str(sock)!r}, {{'op': 'push'}}, 5))\n"
            "except walagent._Foreign:\n    print('foreign')"
        )
        other = subprocess.run(
            ["runuser", "-u", "nobody", "--", sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert other.stdout.strip() == "foreign", other.stderr
        assert handled == []  # the request was never handled with the agent's rights
        assert walagent._ask(str(sock), {"op": "push"}, 5) == {"status": "ok"}  # its own uid is served
        assert handled == [{"op": "push"}]
    finally:
        agent.join(15)
        shutil.rmtree(base, ignore_errors=True)
