"""The only module that runs subprocesses.

A `Cmd` says what to run; a `Runner` runs it. `LocalRunner` is the real one; tests use a FakeRunner
that records argv and replays scripted output. Rules kept here so no caller has to remember them:

- never a shell: argv is a tuple of strings;
- `Cmd.env` is merged over the current environment (or, with `inherit_env=False`, is the whole
  environment: `check` runs opsdb as the server's user with the server's own environment); secrets
  (PGPASSWORD) travel only there, never in argv;
- `run_as` applies only when opsdb runs as root and names another user: the argv is prefixed with
  `runuser -u USER --`, which keeps the environment (runuser sets only HOME, SHELL, USER, LOGNAME);
  as a normal user the command runs as that user;
- every child gets its own process group, and a timeout, an error in the consumer or an early stop kills
  the whole group (runuser's child and whatever the tool started);
- a failed tool raises ToolError(argv0, returncode, stderr_tail, doing=...), with the last ~8 KiB of stderr.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Protocol

from opsdb.errors import ToolError

CHUNK_SIZE = 1024 * 1024
STDERR_TAIL_BYTES = 8 * 1024
FEED_STDOUT_BYTES = 1024 * 1024  # feed() keeps at most this much of the child's stdout (its tail)
KILL_WAIT_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Cmd:
    """One command line. `env` is added to (and overrides) the current environment."""

    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    run_as: str | None = None
    timeout: float | None = None
    cwd: str | None = None
    inherit_env: bool = True

    def __post_init__(self) -> None:
        argv = tuple(str(a) if isinstance(a, os.PathLike) else a for a in self.argv)
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"Cmd.argv must be a non-empty sequence of strings, got {self.argv!r}")
        object.__setattr__(self, "argv", argv)
        if self.env is not None:
            object.__setattr__(self, "env", dict(self.env))

    @property
    def name(self) -> str:
        """The program's base name, for messages."""
        return os.path.basename(self.argv[0])


@dataclasses.dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class Stream(Protocol):
    """What `Runner.stream()` yields: the child's stdout as bounded chunks."""

    pid: int

    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]: ...


class Spawned(Protocol):
    """A background process started by `Runner.spawn()`."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self, timeout: float = KILL_WAIT_SECONDS) -> int: ...


class Runner(Protocol):
    def run(self, cmd: Cmd, *, check: bool = True, doing: str = "") -> Completed: ...

    def stream(self, cmd: Cmd, *, doing: str = "") -> AbstractContextManager[Stream]: ...

    def feed(self, cmd: Cmd, chunks: Iterable[bytes], *, doing: str = "") -> Completed: ...

    def spawn(self, cmd: Cmd, *, log_path: Path | None = None) -> Spawned: ...


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_argv(cmd: Cmd) -> tuple[str, ...]:
    """argv as executed: prefixed with runuser when root must act as another user."""
    if cmd.run_as and os.geteuid() == 0 and cmd.run_as != _current_user():
        return ("runuser", "-u", cmd.run_as, "--", *cmd.argv)
    return cmd.argv


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _child_env(cmd: Cmd) -> dict[str, str] | None:
    if not cmd.inherit_env:
        return dict(cmd.env or {})
    if not cmd.env:
        return None
    env = dict(os.environ)
    env.update(cmd.env)
    return env


def _child_cwd(cmd: Cmd) -> str | None:
    # A tool running as another user must not start in a directory it cannot enter (/root):
    # PostgreSQL tools warn "could not change directory" or fail.
    if cmd.cwd is None and cmd.run_as and effective_argv(cmd)[0] == "runuser":
        return "/"
    return cmd.cwd


class _Tail:
    """The last `limit` bytes written to it, thread-safe."""

    def __init__(self, limit: int) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, data: bytes) -> None:
        with self._lock:
            self._chunks.append(data)
            self._size += len(data)
            while self._size - len(self._chunks[0]) >= self._limit:
                self._size -= len(self._chunks.popleft())

    def value(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)[-self._limit :]

    def text(self) -> str:
        return self.value().decode("utf-8", "replace")


def _drain(pipe: IO[bytes], tail: _Tail) -> threading.Thread:
    def loop() -> None:
        try:
            while True:
                data = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
                if not data:
                    break
                tail.add(data)
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the child is being killed

    thread = threading.Thread(target=loop, name="opsdb-drain", daemon=True)
    thread.start()
    return thread


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group (it leads its own group), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=KILL_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        pass


def _popen(
    cmd: Cmd, *, stdin: int | IO[bytes], stdout: int | IO[bytes], stderr: int | IO[bytes], new_session: bool = False
) -> subprocess.Popen[bytes]:
    argv = effective_argv(cmd)
    try:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=_child_env(cmd),
            cwd=_child_cwd(cmd),
            close_fds=True,
            start_new_session=new_session,
            process_group=None if new_session else 0,
        )
    except FileNotFoundError:
        err = ToolError(cmd.name, 127, f"{argv[0]}: command not found")
        err.hint = "install the PostgreSQL client tools or set pg_bin_dir" if cmd.name.startswith("pg") else None
        raise err from None
    except PermissionError as exc:
        raise ToolError(cmd.name, 126, f"{argv[0]}: {exc.strerror}") from None


class _Watchdog:
    """Kills the process group when the command's timeout passes."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float | None) -> None:
        self.fired = False
        self._timer: threading.Timer | None = None
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._fire, args=(proc,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, proc: subprocess.Popen[bytes]) -> None:
        self.fired = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _timeout_error(cmd: Cmd, tail: str, doing: str) -> ToolError:
    return ToolError(
        cmd.name, -signal.SIGKILL, f"{tail}\ntimed out after {cmd.timeout:g} s and was killed", doing=doing
    )


class _StreamHandle:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.pid = proc.pid
        self._proc = proc
        self.eof = False

    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """stdout in chunks of up to `size` bytes (full chunks except the last)."""
        assert self._proc.stdout is not None
        while True:
            data = self._proc.stdout.read(size)
            if not data:
                self.eof = True
                return
            yield data


class _SpawnHandle:
    def __init__(self, proc: subprocess.Popen[bytes], log: IO[bytes] | None) -> None:
        self.pid = proc.pid
        self._proc = proc
        self._log = log

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self._proc.wait(timeout=timeout)
        finally:
            if self._proc.returncode is not None and self._log is not None:
                self._log.close()

    def terminate(self, timeout: float = KILL_WAIT_SECONDS) -> int:
        """SIGTERM the process group, SIGKILL it if still alive after `timeout` seconds."""
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self._proc)
        return self.wait(timeout=KILL_WAIT_SECONDS)

    def __enter__(self) -> _SpawnHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


class LocalRunner:
    """Runs commands on this machine."""

    def run(self, cmd: Cmd, *, check: bool = True, doing: str = "") -> Completed:
        """Run to completion, capturing stdout and stderr (for commands with small output)."""
        proc = _popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=cmd.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise _timeout_error(cmd, _tail_text(err), doing) from None
        except BaseException:
            _kill_group(proc)
            raise
        result = Completed(proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise ToolError(cmd.name, proc.returncode, _tail_text(err), doing=doing)
        return result

    @contextmanager
    def stream(self, cmd: Cmd, *, doing: str = "") -> Iterator[_StreamHandle]:
        """Yield a handle whose .chunks() iterates stdout; stderr is drained into a bounded tail.

        Leaving the block after reading to EOF waits for the child and raises ToolError on a non-zero exit.
        Leaving early, or with an exception, kills the child's process group; if the child had already
        failed, its ToolError is raised (chained) instead of the consumer's error, since it is the cause.
        """
        proc = _popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tail = _Tail(STDERR_TAIL_BYTES)
        assert proc.stderr is not None and proc.stdout is not None
        drainer = _drain(proc.stderr, tail)
        watchdog = _Watchdog(proc, cmd.timeout)
        handle = _StreamHandle(proc)
        try:
            yield handle
        except BaseException as exc:
            failed = proc.poll()
            _kill_group(proc)
            drainer.join(KILL_WAIT_SECONDS)
            watchdog.cancel()
            _close(proc)
            if watchdog.fired:
                raise _timeout_error(cmd, tail.text(), doing) from exc
            if failed is not None and failed != 0 and isinstance(exc, Exception):
                raise ToolError(cmd.name, failed, tail.text(), doing=doing) from exc
            raise
        if not handle.eof:
            # the consumer stopped early on purpose: nothing more is wanted from the child
            _kill_group(proc)
            drainer.join(KILL_WAIT_SECONDS)
            watchdog.cancel()
            _close(proc)
            return
        _finish(proc, cmd, drainer, watchdog, tail, doing)

    def feed(self, cmd: Cmd, chunks: Iterable[bytes], *, doing: str = "") -> Completed:
        """Write `chunks` to the child's stdin (pg_restore, psql), then wait; ToolError on a non-zero exit.

        An error raised by `chunks` (a corrupt or tampered stream) kills the child so it cannot finish
        on partial input; the error is re-raised. stdout keeps only its last FEED_STDOUT_BYTES.
        """
        proc = _popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        tail = _Tail(STDERR_TAIL_BYTES)
        out = _Tail(FEED_STDOUT_BYTES)
        drainers = (_drain(proc.stderr, tail), _drain(proc.stdout, out))
        watchdog = _Watchdog(proc, cmd.timeout)
        broken = False
        try:
            for chunk in chunks:
                try:
                    proc.stdin.write(chunk)
                    proc.stdin.flush()  # each chunk reaches the child now (a psql script waiting on more input)
                except BrokenPipeError:
                    broken = True  # the child exited or closed stdin: its exit status tells why
                    break
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        except BaseException:
            _kill_group(proc)
            for t in drainers:
                t.join(KILL_WAIT_SECONDS)
            watchdog.cancel()
            _close(proc)
            if watchdog.fired:
                raise _timeout_error(cmd, tail.text(), doing) from None
            raise
        rc = _wait(proc, drainers, watchdog)
        if watchdog.fired:
            raise _timeout_error(cmd, tail.text(), doing)
        if rc != 0:
            raise ToolError(cmd.name, rc, tail.text(), doing=doing)
        if broken:
            raise ToolError(cmd.name, rc, tail.text() + "\nstopped reading its input before the end", doing=doing)
        return Completed(rc, out.value(), tail.value())

    def spawn(self, cmd: Cmd, *, log_path: Path | None = None) -> _SpawnHandle:
        """Start a background process in its own session; stdout+stderr go to log_path (or nowhere)."""
        log = open(log_path, "ab") if log_path is not None else None  # closed by the handle
        target: int | IO[bytes] = log if log is not None else subprocess.DEVNULL
        try:
            proc = _popen(cmd, stdin=subprocess.DEVNULL, stdout=target, stderr=target, new_session=True)
        except BaseException:
            if log is not None:
                log.close()
            raise
        return _SpawnHandle(proc, log)


def _tail_text(err: bytes | None) -> str:
    return (err or b"")[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")


def _close(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def _wait(proc: subprocess.Popen[bytes], drainers: Iterable[threading.Thread], watchdog: _Watchdog) -> int:
    try:
        rc = proc.wait()  # bounded by the watchdog when the command has a timeout
    except BaseException:  # Ctrl-C while waiting: the child must not outlive us
        _kill_group(proc)
        watchdog.cancel()
        _close(proc)
        raise
    watchdog.cancel()
    # The tool has exited; a grandchild that kept stderr open must not hang us.
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    for t in drainers:
        t.join(max(0.0, deadline - time.monotonic()))
    _close(proc)
    return rc


def _finish(
    proc: subprocess.Popen[bytes], cmd: Cmd, drainer: threading.Thread, watchdog: _Watchdog, tail: _Tail, doing: str
) -> None:
    rc = _wait(proc, (drainer,), watchdog)
    if watchdog.fired:
        raise _timeout_error(cmd, tail.text(), doing)
    if rc != 0:
        raise ToolError(cmd.name, rc, tail.text(), doing=doing)


def python_module(module: str) -> tuple[str, ...]:
    """argv of `python -m module` with this interpreter, isolated (-I): neither the working directory (an
    `opsdb/` folder there would shadow the installed package) nor PYTHON* variables nor the user's
    site-packages are on its path. The helpers and jobs opsdb starts all run this way."""
    return (sys.executable, "-I", "-m", module)
