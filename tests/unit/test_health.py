"""ops.health.check.check with a MemoryStorage and a small fake connection: every archive/WAL rule, the exit codes."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from opsdb.config import Settings
from opsdb.errors import ConfigError, DatabaseError, RepositoryUnavailable
from opsdb.model.results import CheckReport, Status, worst
from opsdb.ops.health import check as health
from opsdb.repo import layout, marker
from opsdb.storage.memory import MemoryStorage
from tests.fakes import FakeRunner

T1 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
T2 = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)


class FakeConn:
    def __init__(
        self, *, standby: bool = False, archiver: dict[str, Any] | None = None, **settings: str | None
    ) -> None:
        self.standby = standby
        self.values = {
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": "opsdb --config /etc/opsdb/opsdb.toml wal-push %p",
            "archive_library": "",
            **settings,
        }
        self.archiver = archiver or {}

    def __enter__(self) -> FakeConn:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def server_version(self) -> str:
        return "15.7"

    def server_major(self) -> int:
        return 15

    def in_recovery(self) -> bool:
        return self.standby

    def settings(self, names: list[str]) -> dict[str, str | None]:
        return {n: self.values.get(n) for n in names}

    def archiver_stats(self) -> dict[str, Any]:
        return self.archiver

    def current_wal_lsn(self) -> str:
        return "0/3000060"


@pytest.fixture(autouse=True)
def _fake_bin_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bin directory with (empty) pg_basebackup and pg_dump files: the FakeRunner answers --version."""
    path = tmp_path_factory.mktemp("bin")
    for name in ("pg_basebackup", "pg_dump"):
        (path / name).write_text("")
    monkeypatch.setattr(sys.modules[__name__], "BIN_DIR", str(path))


BIN_DIR = ""


def _settings(**cluster: Any) -> Settings:
    section = {"conninfo": "host=db password=pw", "pg_bin_dir": BIN_DIR, **cluster}
    return Settings(repository={"url": "file:///unused"}, clusters={"main": section})


def _runner(major: int = 15) -> FakeRunner:
    runner = FakeRunner()
    runner.script("pg_basebackup", stdout=f"pg_basebackup (PostgreSQL) {major}.7\n".encode())
    runner.script("pg_dump", stdout=f"pg_dump (PostgreSQL) {major}.7 (Debian {major}.7-1)\n".encode())
    return runner


def _run(
    conns: dict[str, FakeConn | Exception],
    settings: Settings | None = None,
    storage: Any = None,
    runner: FakeRunner | None = None,
) -> CheckReport:
    store = storage or MemoryStorage()

    def connect(conninfo: str, **kw: Any) -> FakeConn:
        found = conns[conninfo]
        if isinstance(found, Exception):
            raise found
        return found

    return health.check(
        lambda: settings or _settings(),
        None,
        open_storage=lambda url, **kw: store,
        connect=connect,
        runner=runner or _runner(),
    )


def _status(report: CheckReport, name: str) -> Status:
    found = report.get(name)
    assert found is not None, [c.name for c in report.checks]
    return found.status


def test_worst_ranks_critical_above_unknown() -> None:
    assert worst([Status.OK, Status.UNKNOWN, Status.CRITICAL]) is Status.CRITICAL
    assert worst([Status.WARNING, Status.UNKNOWN]) is Status.UNKNOWN
    assert worst([]) is Status.OK
    assert [s.exit_code for s in Status] == [0, 1, 2, 3]


def test_all_ok_and_probe_removed() -> None:
    store = MemoryStorage()
    report = _run({"host=db password=pw": FakeConn()}, storage=store)
    assert report.status is Status.OK and report.exit_code == 0
    assert list(store.list("")) == []
    assert report.to_dict()["checks"][1]["name"] == "repository"


def test_markers_are_reported() -> None:
    store = MemoryStorage()
    fresh = _run({"host=db password=pw": FakeConn()}, storage=store).get("marker")
    assert fresh is not None and fresh.status is Status.OK and "none yet" in fresh.detail
    marker.ensure_cluster_marker(store, "main", 7441620935618519234, what="test")
    marker.update_capabilities(store, {"versioning": True})
    report = _run({"host=db password=pw": FakeConn()}, storage=store)
    found = report.get("marker")
    assert found is not None and found.status is Status.OK
    assert "cluster main: system identifier 7441620935618519234" in found.detail
    assert "versioning=True" in found.detail and "conditional_writes" not in found.detail
    # the conditional-write probe has its own words on the repository line, and is recorded
    repository = report.get("repository")
    assert repository is not None and "writable, conditional writes honoured" in repository.detail
    recorded = marker.read_repository_marker(store)
    assert recorded is not None and recorded.capabilities["conditional_writes"]["put"] == "refused"
    store.put(layout.cluster_marker("main"), [b"garbage"])
    assert _status(_run({"host=db password=pw": FakeConn()}, storage=store), "marker") is Status.CRITICAL


@pytest.mark.parametrize(
    ("settings", "name", "expected"),
    [
        ({"wal_level": "minimal", "archive_mode": "off"}, "wal_level", Status.CRITICAL),
        ({"wal_level": "logical"}, "wal_level", Status.OK),
        ({"archive_mode": "off"}, "archive_mode", Status.CRITICAL),
        ({"archive_mode": "off"}, "archive_command", Status.CRITICAL),
        ({"archive_mode": "always"}, "archive_mode", Status.OK),
        ({"archive_command": "cp %p /mnt/%f"}, "archive_command", Status.WARNING),
        ({"archive_command": "opsdb wal-push"}, "archive_command", Status.WARNING),
        ({"archive_command": ""}, "archive_command", Status.CRITICAL),
        ({"archive_command": None}, "archive_command", Status.UNKNOWN),
        ({"archive_library": "basic_archive"}, "archive_command", Status.WARNING),
    ],
)
def test_archive_rules(settings: dict[str, str | None], name: str, expected: Status) -> None:
    report = _run({"host=db password=pw": FakeConn(**settings)})
    assert _status(report, name) is expected


def test_archiver_failing_warns() -> None:
    failing = {
        "last_archived_time": T1,
        "last_archived_wal": "A",
        "last_failed_time": T2,
        "last_failed_wal": "B",
        "failed_count": 3,
    }
    report = _run({"host=db password=pw": FakeConn(archiver=failing)})
    assert _status(report, "archiver") is Status.WARNING and report.exit_code == 1
    recovered = {**failing, "last_archived_time": T2, "last_failed_time": T1}
    assert _status(_run({"host=db password=pw": FakeConn(archiver=recovered)}), "archiver") is Status.OK


def test_standby_with_archive_mode_on_is_ok() -> None:
    report = _run({"host=db password=pw": FakeConn(standby=True)})
    assert _status(report, "archive_mode") is Status.OK and "standby" in report.get("server").detail  # type: ignore[union-attr]


def test_unreachable_server() -> None:
    report = _run({"host=db password=pw": DatabaseError("unable to connect to host=db password=***: refused")})
    assert _status(report, "server") is Status.CRITICAL
    assert all(_status(report, n) is Status.UNKNOWN for n in health.SERVER_CHECKS)
    assert report.exit_code == 2


def test_repository_failures() -> None:
    class Broken(MemoryStorage):
        def put(self, *a: Any, **k: Any) -> Any:
            raise RepositoryUnavailable("access denied")

    report = _run({"host=db password=pw": FakeConn()}, storage=Broken())
    repo = report.get("repository")
    assert (
        repo is not None
        and repo.status is Status.CRITICAL
        and "unable to write probe object: access denied" in repo.detail
    )

    class NoDelete(MemoryStorage):
        def delete(self, keys: Any) -> None:
            raise RepositoryUnavailable("object lock")

    assert _status(_run({"host=db password=pw": FakeConn()}, storage=NoDelete()), "repository") is Status.WARNING


def test_replicas() -> None:
    settings = _settings(
        replicas=[
            {"name": "a", "conninfo": "host=a"},
            {"name": "b", "conninfo": "host=b"},
            {"name": "c", "conninfo": "host=c"},
        ]
    )
    conns = {
        "host=db password=pw": FakeConn(),
        "host=a": FakeConn(standby=True),
        "host=b": FakeConn(),
        "host=c": DatabaseError("down"),
    }
    report = _run(conns, settings)
    assert [_status(report, f"replica {n}") for n in "abc"] == [Status.OK, Status.WARNING, Status.CRITICAL]


def test_bad_config_and_no_cluster() -> None:
    def bad() -> Settings:
        raise ConfigError("invalid configuration in x.toml: repository.url: nope")

    report = health.check(bad, None)
    assert [c.to_dict() for c in report.checks] == [
        {"name": "config", "status": "CRITICAL", "detail": "invalid configuration in x.toml: repository.url: nope"}
    ]
    empty = Settings(repository={"url": "file:///unused"})
    report = health.check(lambda: empty, None, open_storage=lambda url, **kw: MemoryStorage())
    assert _status(report, "server") is Status.UNKNOWN and report.exit_code == 3
    two = Settings(clusters={"a": {}, "b": {}})
    report = health.check(lambda: two, "zzz", open_storage=lambda url, **kw: MemoryStorage())
    assert _status(report, "config") is Status.CRITICAL


def test_binaries_older_than_the_server_are_critical() -> None:
    report = _run({"host=db password=pw": FakeConn()}, runner=_runner(major=14))
    found = report.get("binaries")
    assert found is not None and found.status is Status.CRITICAL and "older than the server (15)" in found.detail
    assert _status(_run({"host=db password=pw": FakeConn()}, runner=_runner(major=16)), "binaries") is Status.OK


def test_binaries_missing_are_critical(tmp_path: Any) -> None:
    settings = _settings(pg_bin_dir=str(tmp_path))
    report = _run({"host=db password=pw": FakeConn()}, settings)
    found = report.get("binaries")
    assert found is not None and found.status is Status.CRITICAL and "has no pg_ctl or pg_basebackup" in found.detail
