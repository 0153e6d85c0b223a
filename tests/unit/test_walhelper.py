"""The WAL helper's socket protocol (ops/wal/spool.py) and serving loop (ops/wal/helper.py), with a real
Unix socket and a small double of the helper's work."""

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

from opsdb.errors import IntegrityError, NotFound, OperationFailed, exit_code
from opsdb.ops.wal import helper as walhelper
from opsdb.ops.wal import spool as walspool


class Work:
    """What the helper does with a request, recorded; close() as the pusher and prefetch have it."""

    def __init__(self, stale=lambda: False) -> None:
        self.requests: list[list[str]] = []
        self.stale = stale
        self.pusher = self.prefetch = self

    def busy(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def handle(self, request: list[str]) -> list[str]:
        self.requests.append(request)
        if request[0] == "boom":
            raise RuntimeError("bug")
        if request[0] == "missing":
            return walspool.error_reply(NotFound("not archived"))
        return walspool.ok_reply(echo=request[0])


class Helper:
    """serve() in a thread, as the helper process runs it."""

    def __init__(self, paths: walspool.Paths, *, stale=lambda: False, idle_exit: float = 30.0) -> None:
        self.paths, self.work, self.served = paths, Work(stale), None
        self.thread = threading.Thread(target=self._run, args=(idle_exit,), daemon=True)

    def _run(self, idle_exit: float) -> None:
        self.served = walhelper.serve(self.paths, self.work, idle_exit=idle_exit)

    def start(self):
        self.thread.start()
        return self.thread.is_alive

    def wait_listening(self) -> None:
        for _ in range(500):
            if os.path.exists(self.paths.sock):
                return
            time.sleep(0.01)
        raise AssertionError("the helper did not start listening")


def call(paths: walspool.Paths, request: list[str], start, warn=None) -> list[str] | None:
    return walspool.call(paths, request, start, timeout=5, warn=warn or (lambda m: None))


@pytest.fixture
def paths(tmp_path) -> walspool.Paths:
    return walspool.Paths(str(tmp_path / "spool"), "main", None)


def test_messages_survive_tabs_newlines_and_backslashes() -> None:
    fields = ["push", "/data/odd\tname\nwith\\slashes", ""]
    assert walspool.unpack(walspool.pack(fields)) == fields


def test_a_call_starts_the_helper_once_and_is_served_by_it(paths) -> None:
    helper = Helper(paths, idle_exit=0.5)
    assert call(paths, ["push", "/x"], helper.start) == ["ok", "echo=push"]
    assert call(paths, ["fetch", "n", "d", ""], lambda: pytest.fail("a second helper started")) == ["ok", "echo=fetch"]
    helper.thread.join(10)
    assert helper.served == 2 and not os.path.exists(paths.sock)  # idle: it left and removed its socket


def test_errors_come_back_as_the_same_errors_and_the_one_policy_maps_them(paths) -> None:
    helper = Helper(paths, idle_exit=0.5)
    reply = call(paths, ["missing"], helper.start)
    with pytest.raises(NotFound) as caught:
        walspool.raise_error(reply)
    assert exit_code(caught.value, "wal-fetch") == 1 and exit_code(caught.value, "wal-push") == 1
    bug = call(paths, ["boom"], helper.start)
    assert bug[0] == "error" and "internal error in the WAL helper" in bug[2]
    with pytest.raises(OperationFailed) as failed:
        walspool.raise_error(bug)
    assert exit_code(failed.value, "wal-fetch") == 128  # recovery stops rather than ending early
    helper.thread.join(10)


def test_hint_survives_the_socket_and_unknown_types_are_operation_failures() -> None:
    with pytest.raises(IntegrityError) as caught:
        walspool.raise_error(walspool.error_reply(IntegrityError("tag mismatch", hint="check the key")))
    assert caught.value.hint == "check the key" and exit_code(caught.value, "wal-fetch") == 128
    with pytest.raises(OperationFailed):
        walspool.raise_error(["error", "NoSuchError", "m", ""])


def test_a_stale_helper_hands_over_to_a_new_one(paths, tmp_path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"one")
    seen = key.read_bytes()
    old = Helper(paths, stale=lambda: key.read_bytes() != seen)
    old.start()
    old.wait_listening()
    assert call(paths, ["a"], old.start) == ["ok", "echo=a"]
    key.write_bytes(b"rotated")  # the settings behind the running helper changed
    new = Helper(paths, idle_exit=0.5)
    assert call(paths, ["b"], new.start) == ["ok", "echo=b"]
    old.thread.join(10)
    assert not old.thread.is_alive() and old.work.requests == [["a"]]
    assert new.work.requests == [["b"]]
    new.thread.join(10)


def test_a_second_helper_on_the_same_socket_steps_aside(paths) -> None:
    first = Helper(paths, idle_exit=1.0)
    first.start()
    first.wait_listening()
    assert walhelper.serve(paths, Work(), idle_exit=0.1) == 0
    assert os.path.exists(paths.sock)  # the running helper's socket is left alone
    first.thread.join(10)


def test_the_socket_follows_config_and_environment(tmp_path, monkeypatch) -> None:
    config = tmp_path / "opsdb.toml"
    config.write_text("[repository]\n")
    spool = str(tmp_path / "spool")
    one = walspool.Paths(spool, "main", str(config)).sock
    assert one == walspool.Paths(spool, "main", str(config)).sock
    assert one != walspool.Paths(spool, "other", str(config)).sock
    monkeypatch.setenv("OPSDB_REPOSITORY__URL", "file:///elsewhere")
    two = walspool.Paths(spool, "main", str(config)).sock
    assert two != one
    os.utime(config, ns=(1, 1))
    assert walspool.Paths(spool, "main", str(config)).sock != two


def test_a_socket_deeper_than_sockaddr_allows_still_works(tmp_path) -> None:
    deep = walspool.Paths(str(tmp_path / ("d" * 90) / ("e" * 90)), "main", None)
    assert len(deep.sock) > walspool.SUN_PATH_MAX
    helper = Helper(deep, idle_exit=0.5)
    assert call(deep, ["deep"], helper.start) == ["ok", "echo=deep"]
    helper.thread.join(10)


def test_no_writable_spool_means_in_process_with_a_warning(tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    warnings: list[str] = []
    started: list[bool] = []

    def start():
        started.append(True)
        return lambda: True

    assert call(walspool.Paths(str(blocker), "main", None), ["a"], start, warnings.append) is None
    assert not started and len(warnings) == 1 and "working in-process" in warnings[0]


def test_follow_reloads_rotated_keys_in_place_and_leaves_on_a_config_change(tmp_path) -> None:
    from opsdb.stream.crypto import generate_key_file, load_key

    generate_key_file(tmp_path / "key")
    config = tmp_path / "opsdb.toml"
    config.write_text(
        f'[repository]\nurl = "file://{tmp_path}/repo"\n[encryption]\nkey_file = "{tmp_path}/key"\n'
        '[clusters.main]\nconninfo = "host=x"\n'
    )
    follow = walhelper.Follow(str(config), None, str(tmp_path))
    _, repo = follow.load()
    holder = type("Holder", (), {"repo": repo})()
    follow.users = [holder]
    old_id = load_key(key_file=tmp_path / "key").id
    assert not follow()
    generate_key_file(tmp_path / "next")
    os.replace(tmp_path / "next", tmp_path / "key")  # rotated in place
    assert not follow()  # the helper goes on, with the new key for what begins now
    new_id = load_key(key_file=tmp_path / "key").id
    assert holder.repo.codec.key.id == new_id and set(holder.repo.keys) == {old_id, new_id}
    config.write_text(config.read_text().replace("/repo", "/moved"))
    assert follow() and follow()  # a changed config: it leaves, and stays leaving


@pytest.mark.root("a caller of another uid needs root to set up")
def test_the_helper_serves_only_its_own_uid_others_are_told_to_work_in_process() -> None:
    base = Path(tempfile.mkdtemp(prefix="opsdb-helper-uid-", dir="/tmp"))
    base.chmod(0o755)
    paths = walspool.Paths(str(base), "main", None)
    helper = Helper(paths, idle_exit=2.0)
    helper.start()
    try:
        helper.wait_listening()
        for d in (base / "main", Path(paths.directory)):
            d.chmod(0o755)
        os.chmod(paths.sock, 0o666)  # let the other uid reach the socket: only the peer check stands in its way
        root = str(Path(walspool.__file__).parents[2])
        code = (
            f"import sys; sys.path.insert(0, {root!r}); from opsdb.ops.wal import spool as walspool\n"
            f"try:\n    print(walspool._ask({paths.sock!r}, ['push', '/x'], 5))\n"
            "except walspool._Foreign:\n    print('foreign')"
        )
        other = subprocess.run(
            ["runuser", "-u", "nobody", "--", sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert other.stdout.strip() == "foreign", other.stderr
        assert helper.work.requests == []  # the request was never handled with the helper's rights
        assert walspool._ask(paths.sock, ["push", "/x"], 5) == ["ok", "echo=push"]  # its own uid is served
        assert helper.work.requests == [["push", "/x"]]
    finally:
        helper.thread.join(15)
        shutil.rmtree(base, ignore_errors=True)
