"""LocalRunner against real child processes: capture, streaming in bounded memory, errors, kills, timeouts."""

from __future__ import annotations

import os
import pwd
import resource
import sys
import time
from pathlib import Path

import pytest

from opsdb.errors import ToolError
from opsdb.proc import STDERR_TAIL_BYTES, Cmd, LocalRunner, effective_argv
from tests.gate import missing

runner = LocalRunner()
PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_cmd_requires_strings() -> None:
    with pytest.raises(ValueError):
        Cmd(())
    with pytest.raises(ValueError):
        Cmd(("echo", 3))  # type: ignore[arg-type]
    assert Cmd(["echo", Path("/x")]).argv == ("echo", "/x")  # type: ignore[arg-type]


def test_run_captures_output_and_merges_env() -> None:
    result = runner.run(Cmd(("sh", "-c", 'echo "$OPSDB_T_VAR"; echo err >&2'), env={"OPSDB_T_VAR": "v1"}))
    assert result.returncode == 0
    assert result.stdout == b"v1\n"
    assert result.stderr == b"err\n"
    # PATH still inherited: `sh` was found, and env only adds
    assert runner.run(Cmd(("sh", "-c", "echo $PATH"), env={"X": "1"})).text.strip() == os.environ["PATH"]


def test_run_nonzero_raises_tool_error_with_stderr_tail() -> None:
    with pytest.raises(ToolError) as info:
        runner.run(Cmd(("sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3")), doing="testing")
    err = info.value
    assert err.argv0 == "sh" and err.returncode == 3
    assert "the real reason" in err.stderr_tail
    assert str(err) == "sh failed while testing (exit 3): the real reason"


def test_run_check_false_returns_returncode() -> None:
    assert runner.run(Cmd(("sh", "-c", "exit 4")), check=False).returncode == 4


def test_missing_program_is_tool_error() -> None:
    with pytest.raises(ToolError) as info:
        runner.run(Cmd(("/nonexistent/pg_dump", "-V")))
    assert info.value.returncode == 127 and info.value.argv0 == "pg_dump"


def test_run_timeout_kills_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    with pytest.raises(ToolError) as info:
        runner.run(Cmd(("sh", "-c", script), timeout=0.5))
    assert time.monotonic() - started < 10
    assert "timed out after 0.5 s" in str(info.value)
    assert _wait_dead(int(pidfile.read_text())), "the grandchild survived the timeout"


def test_stream_large_output_in_bounded_memory() -> None:
    total = 512 * 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seen = 0
    biggest = 0
    with runner.stream(Cmd(("head", "-c", str(total), "/dev/zero"))) as out:
        for chunk in out.chunks(1024 * 1024):
            seen += len(chunk)
            biggest = max(biggest, len(chunk))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert seen == total
    assert biggest == 1024 * 1024
    assert (after - before) < 64 * 1024, f"peak RSS grew by {(after - before) // 1024} MiB"


def test_stream_nonzero_exit_raises_at_end_with_bounded_tail() -> None:
    # 100 KiB of noise on stderr, then the reason: the tail keeps the reason and stays bounded
    code = "import sys; sys.stdout.write('data'); sys.stderr.write('x' * 100000 + '\\nfatal: it broke\\n'); sys.exit(2)"
    got = b""
    with pytest.raises(ToolError) as info:
        with runner.stream(Cmd((PY, "-c", code)), doing="streaming") as out:
            for chunk in out.chunks():
                got += chunk
    assert got == b"data"
    assert info.value.returncode == 2
    assert str(info.value).endswith("fatal: it broke")
    assert len(info.value.stderr_tail.encode()) <= STDERR_TAIL_BYTES


def test_stream_early_stop_kills_child() -> None:
    # the child writes, then idles with stdout open: only a kill ends it (SIGPIPE would not)
    with runner.stream(Cmd(("sh", "-c", "head -c 8192 /dev/zero; exec sleep 60"))) as out:
        pid = out.pid
        for _chunk in out.chunks(4096):
            break
    assert _wait_dead(pid)


def test_stream_consumer_error_kills_child_and_propagates() -> None:
    with pytest.raises(KeyError):
        with runner.stream(Cmd(("sh", "-c", "head -c 8192 /dev/zero; exec sleep 60"))) as out:
            pid = out.pid
            next(iter(out.chunks(4096)))
            raise KeyError("consumer failed")
    assert _wait_dead(pid)


def test_stream_consumer_error_after_child_failed_reports_the_tool() -> None:
    with pytest.raises(ToolError) as info:
        with runner.stream(Cmd(("sh", "-c", "printf abc; echo 'server closed the connection' >&2; exit 1"))) as out:
            data = b"".join(out.chunks())
            time.sleep(0.2)
            raise ValueError(f"truncated tar: {len(data)} bytes")
    assert "server closed the connection" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_stream_timeout() -> None:
    with pytest.raises(ToolError) as info:
        with runner.stream(Cmd(("sleep", "30"), timeout=0.5)) as out:
            list(out.chunks())
    assert "timed out" in str(info.value)


def test_feed_writes_stdin() -> None:
    chunks = (b"a" * 65536 for _ in range(160))  # 10 MiB
    result = runner.feed(Cmd(("wc", "-c")), chunks)
    assert result.stdout.strip() == str(160 * 65536).encode()


def test_feed_child_failure_is_tool_error() -> None:
    chunks = (b"x" * 65536 for _ in range(1000))
    with pytest.raises(ToolError) as info:
        runner.feed(Cmd(("sh", "-c", "echo 'bad input' >&2; exit 3")), chunks, doing="restoring")
    assert info.value.returncode == 3 and "bad input" in str(info.value)


def test_feed_child_stops_reading_early_is_an_error() -> None:
    with pytest.raises(ToolError) as info:
        runner.feed(Cmd(("head", "-c", "10")), (b"y" * 65536 for _ in range(100)))
    assert "stopped reading its input" in info.value.stderr_tail


def test_feed_source_error_kills_child() -> None:
    pids: list[int] = []

    def source():
        yield b"SELECT 1;\n"
        pids.extend(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_our_cat(int(p)))
        raise ValueError("tampered chunk")

    with pytest.raises(ValueError, match="tampered"):
        runner.feed(Cmd(("cat",)), source())
    assert pids, "the child was not found while running"
    assert all(_wait_dead(p) for p in pids)


def _is_our_cat(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return "(cat)" in stat and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def test_spawn_and_terminate(tmp_path: Path) -> None:
    log = tmp_path / "bg.log"
    handle = runner.spawn(Cmd(("sh", "-c", "echo started; exec sleep 60")), log_path=log)
    deadline = time.monotonic() + 5
    while b"started" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.poll() is None
    rc = handle.terminate(timeout=5)
    assert rc != 0 and handle.poll() is not None
    assert log.read_bytes() == b"started\n"


def test_run_as_only_applies_to_root_and_other_users() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert effective_argv(Cmd(("id",), run_as=me)) == ("id",)
    other = Cmd(("id",), run_as="postgres")
    if os.geteuid() == 0:
        assert effective_argv(other) == ("runuser", "-u", "postgres", "--", "id")
    else:
        assert effective_argv(other) == ("id",)


@pytest.mark.root("needs root to switch users")
def test_run_as_switches_user_and_keeps_env() -> None:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing("no postgres OS user")
    result = runner.run(
        Cmd(("sh", "-c", 'id -un; echo "$OPSDB_T_SECRET"; pwd'), env={"OPSDB_T_SECRET": "s"}, run_as="postgres")
    )
    assert result.text.split() == ["postgres", "s", "/"]
