"""Small real doubles for the interfaces in opsdb.proc (no mock.patch of opsdb internals).

FakeRunner records every Cmd it is given and replays scripted results, matched by program name
(the argv[0] base name) or by a predicate, in order. A command no script matches fails the test
(UnscriptedCommand): a test says what every command it causes answers, success included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from opsdb.errors import ToolError
from opsdb.proc import CHUNK_SIZE, Cmd, Completed


@dataclasses.dataclass
class Script:
    match: Callable[[Cmd], bool]
    returncode: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    times: int | None = None  # None: every matching call


class _FakeStream:
    def __init__(self, data: bytes) -> None:
        self.pid = 4242
        self._data = data

    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        for i in range(0, len(self._data), size):
            yield self._data[i : i + size]


class _FakeSpawned:
    def __init__(self, returncode: int) -> None:
        self.pid = 4343
        self._rc = returncode
        self.terminated = False

    def poll(self) -> int | None:
        return self._rc if self.terminated else None

    def wait(self, timeout: float | None = None) -> int:
        return self._rc

    def terminate(self, timeout: float = 10) -> int:
        self.terminated = True
        return self._rc


class UnscriptedCommand(AssertionError):
    """A command the test did not script reached the FakeRunner (not an opsdb error: it must not be caught
    as one)."""


class FakeRunner:
    """Records commands (`.calls`), feeds (`.fed`: the bytes written to stdin per call), replays scripts."""

    def __init__(self) -> None:
        self.calls: list[Cmd] = []
        self.fed: list[bytes] = []
        self._scripts: list[Script] = []

    def script(
        self,
        program: str | Callable[[Cmd], bool],
        *,
        returncode: int = 0,
        stdout: bytes = b"",
        stderr: bytes = b"",
        times: int | None = None,
    ) -> FakeRunner:
        match = program if callable(program) else (lambda cmd, p=program: cmd.name == p)
        self._scripts.append(Script(match, returncode, stdout, stderr, times))
        return self

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [c.argv for c in self.calls]

    def _result(self, cmd: Cmd) -> Completed:
        self.calls.append(cmd)
        for s in self._scripts:
            if s.match(cmd) and (s.times is None or s.times > 0):
                if s.times is not None:
                    s.times -= 1
                return Completed(s.returncode, s.stdout, s.stderr)
        raise UnscriptedCommand(f"FakeRunner was never told about {cmd.argv!r}: script it (runner.script(...))")

    def _check(self, cmd: Cmd, result: Completed, doing: str) -> None:
        if result.returncode != 0:
            raise ToolError(cmd.name, result.returncode, result.stderr.decode("utf-8", "replace"), doing=doing)

    def run(self, cmd: Cmd, *, check: bool = True, doing: str = "") -> Completed:
        result = self._result(cmd)
        if check:
            self._check(cmd, result, doing)
        return result

    @contextmanager
    def stream(self, cmd: Cmd, *, doing: str = "") -> Iterator[_FakeStream]:
        result = self._result(cmd)
        yield _FakeStream(result.stdout)
        self._check(cmd, result, doing)

    def feed(self, cmd: Cmd, chunks: Iterable[bytes], *, doing: str = "") -> Completed:
        result = self._result(cmd)
        self.fed.append(b"".join(chunks))
        self._check(cmd, result, doing)
        return result

    def spawn(self, cmd: Cmd, *, log_path: Path | None = None) -> _FakeSpawned:
        return _FakeSpawned(self._result(cmd).returncode)


# --- WAL files as PostgreSQL writes them ------------------------------------------------------------

TEST_SYSTEM_IDENTIFIER = 7300000000000000001


def wal_segment(
    name: str, body: bytes | None = None, *, system_identifier: int = TEST_SYSTEM_IDENTIFIER, size: int = 65536
) -> bytes:
    """A WAL file named `name` (segment or .partial) whose first page starts with the long page header
    PostgreSQL writes (timeline, segment address, system identifier), followed by `body` (random when
    None). `name` decides the header, so a file made for one name is caught when stored under another."""
    import os
    import struct

    base = name.split(".", 1)[0]
    tli, log, seg = int(base[:8], 16), int(base[8:16], 16), int(base[16:24], 16)
    seg_size = 16 * 1024 * 1024
    pageaddr = (log * (0x100000000 // seg_size) + seg) * seg_size
    header = struct.pack("<HHIQI4xQII", 0xD116, 0x0002, tli, pageaddr, 0, system_identifier, seg_size, 8192)
    if body is None:
        body = os.urandom(max(0, size - len(header)))
    return header + body
