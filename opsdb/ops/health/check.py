"""Health use cases. `check`: is this machine set up so that backups and WAL archiving can work?

Each check yields OK / WARNING / CRITICAL / UNKNOWN with a one-line detail; a check never raises
(a monitoring command must always answer). Checks that depend on an earlier failure report UNKNOWN
("not checked: ...") so the list of checks is stable for scripts.
With `as_server` (the CLI's default) the path PostgreSQL uses is proven too (ops/health/as_server.py):
the archive_command's opsdb run as the cluster's os_user with the server's environment (`probe`, below,
is what it runs), the ownership of a file:// repository and the spool, and a WAL switch that must reach
the repository.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsdb.config import ClusterConfig, Settings
from opsdb.errors import OpsdbError
from opsdb.model.results import CheckReport, Status
from opsdb.ops.common.privileges import handover
from opsdb.pg import conn as pg_conn
from opsdb.pg.conninfo import redact
from opsdb.pg.tools import PgTools, find_bin_dir, major_of_version
from opsdb.proc import LocalRunner, Runner
from opsdb.repo import layout, marker, storecaps
from opsdb.storage import Storage
from opsdb.storage import open_storage as _open_storage

OK, WARNING, CRITICAL, UNKNOWN = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN
SERVER_CHECKS = ("wal_level", "archive_mode", "archive_command", "archiver", "summarize_wal")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OpsdbError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def check(
    load_settings: Callable[[], Settings],
    cluster_name: str | None,
    *,
    open_storage: Callable[..., Storage] = _open_storage,
    connect: Callable[..., pg_conn.PgConnection] = pg_conn.connect,
    clock: Callable[[], float] = time.monotonic,
    connect_timeout: float = 5,
    runner: Runner | None = None,
    as_server: bool = False,
    switch_wal: bool = True,
) -> CheckReport:
    """Run every check in order: config, repository, encryption, server, binaries, archiving, replicas;
    with as_server, then os_user, os_user repository/encryption/spool, ownership and archiving."""
    report = CheckReport()
    try:
        settings = load_settings()
    except OpsdbError as exc:
        report.add("config", CRITICAL, str(exc))
        return report
    source = str(settings.config_path) if settings.config_path else "no config file: embedded defaults"

    name: str | None = None
    cluster: ClusterConfig | None = None
    cluster_problem: str | None = None
    try:
        name, cluster = settings.cluster(cluster_name)
    except OpsdbError as exc:
        cluster_problem = str(exc)
    if cluster_problem is not None and settings.clusters:
        report.add("config", CRITICAL, f"{source}: {cluster_problem}")
    else:
        report.add("config", OK, source + (f", cluster {name}" if name else ""))

    _check_repository(report, settings, name, open_storage, clock)
    _check_encryption(report, settings)
    if cluster is None:
        report.add("server", UNKNOWN, f"not checked: {cluster_problem}")
        return report
    runner = runner or LocalRunner()
    server = _check_server(report, cluster, connect, connect_timeout, runner)
    for replica in cluster.replicas:
        _check_replica(report, replica.name, replica.conninfo, connect, connect_timeout)
    if as_server and name is not None:
        _check_as_server(report, settings, name, cluster, server, connect, runner, switch_wal)
    return report


def _check_as_server(
    report: CheckReport,
    settings: Settings,
    name: str,
    cluster: ClusterConfig,
    server: dict[str, Any],
    connect: Callable[..., pg_conn.PgConnection],
    runner: Runner,
    switch_wal: bool,
) -> None:
    from opsdb.ops.common.codec import open_repository
    from opsdb.ops.health import as_server as health_server
    from opsdb.repo import wal as repo_wal

    account = health_server.check_as_server(report, settings, name, cluster.os_user, server, runner)
    health_server.check_ownership(report, settings, name, account)

    def archived(segment: str) -> bool:
        return repo_wal.exists(open_repository(settings), name, segment) is not None

    health_server.check_archiving(report, cluster, server, connect, archived, switch_wal)


def probe(settings: Settings, cluster_name: str | None) -> dict[str, Any]:
    """What `opsdb archive-probe` reports, run as the server's user by `check`: can this user, in this
    environment, write the repository, read the key and use the spool (as archive_command must)."""
    import os

    from opsdb import __version__
    from opsdb.ops.common.privileges import current_user
    from opsdb.ops.health import as_server as health_server

    name, _cluster = settings.cluster(cluster_name)
    report = CheckReport()
    _check_repository(report, settings, name, _open_storage, time.monotonic)
    _check_encryption(report, settings)
    wal = settings.wal
    status, detail = health_server.spool_status(str(wal.spool_dir), name, wal.agent or wal.async_ or wal.prefetch > 0)
    report.add("spool", status, detail)
    return {
        "version": __version__,
        "user": current_user(),
        "cluster": name,
        "repository": settings.repository.url,
        "credentials": health_server.credential_sources(dict(os.environ), os.path.expanduser("~")),
        # the markers are the repository's, the same for every user: check reports them once, as itself
        "checks": [c for c in report.to_dict()["checks"] if c["name"] != "marker"],
    }


def _check_repository(
    report: CheckReport,
    settings: Settings,
    cluster: str | None,
    open_storage: Callable[..., Storage],
    clock: Callable[[], float],
) -> None:
    repo = settings.repository
    prefix = layout.cluster_prefix(cluster) if cluster else ""
    key = f"{prefix}check/probe-{secrets.token_hex(8)}"
    payload = secrets.token_bytes(64)
    started = clock()
    stage = "open"
    account = handover(settings)  # the repository's rule, as ops/common/codec.open_repository applies it
    owner = {"owner": account.owner} if account is not None else {}  # root: the probe's directories too
    try:
        storage = open_storage(
            repo.url,
            endpoint_url=repo.endpoint_url,
            region=repo.region,
            checksum_mode=repo.checksum_mode,
            part_size=repo.part_size,
            max_attempts=repo.max_attempts,
            object_lock_days=repo.object_lock_days,
            upload_concurrency=repo.upload_concurrency,
            conditional_writes=repo.conditional_writes,
            **owner,
        )
        stage = "write"
        storage.put(key, [payload], if_absent=True)
        stage = "read back"
        fh = storage.open(key)
        try:
            data = fh.read()
        finally:
            fh.close()
        if data != payload:
            report.add("repository", CRITICAL, f"{repo.url}: probe object {key} read back different bytes")
            return
    except Exception as exc:
        report.add("repository", CRITICAL, f"{repo.url}: unable to {stage} probe object: {_describe(exc)}")
        return
    try:
        storage.delete([key])
    except Exception as exc:  # written and read fine: the repository works, clean-up did not
        report.add("repository", WARNING, f"{repo.url} writable, but the probe {key} was not deleted: {_describe(exc)}")
        return
    try:
        caps = storecaps.reprobe(storage)
    except Exception as exc:
        report.add(
            "repository", CRITICAL, f"{repo.url} writable, but unable to probe conditional writes: {_describe(exc)}"
        )
        return
    elapsed_ms = (clock() - started) * 1000
    status, honours = _conditional_writes(caps)
    report.add("repository", status, f"{repo.url} writable, {honours} ({elapsed_ms:.0f} ms)")
    _check_markers(report, storage, cluster)


def _conditional_writes(caps: storecaps.Reprobe) -> tuple[Status, str]:
    """What the store does with a second create-only write (under conditional_writes = "refuse" a store
    that does not refuse fails the probe object's write above). A marker that said otherwise: WARNING."""
    said = (
        f"; the repository marker said {caps.before.describe()}, now corrected" if caps.changed and caps.before else ""
    )
    guarded = "" if caps.probe.honoured else ": create-only writes are guarded (docs/storage.md)"
    return (WARNING if said else OK), caps.probe.describe() + guarded + said


def _check_markers(report: CheckReport, storage: Storage, cluster: str | None) -> None:
    """The repository and cluster markers (repo/marker.py): absent is fine before the first write."""
    try:
        repository = marker.read_repository_marker(storage)
        found = marker.read_cluster_marker(storage, cluster) if cluster else None
    except Exception as exc:
        report.add("marker", CRITICAL, f"unable to read the repository markers: {_describe(exc)}")
        return
    if repository is None and found is None:
        report.add("marker", OK, "none yet: the first wal-push, backup or dump creates the repository")
        return
    parts = []
    if repository is not None:
        shown = sorted(
            (k, v) for k, v in repository.capabilities.items() if k != storecaps.CAPABILITY
        )  # on its own line
        caps = ", ".join(f"{k}={v}" for k, v in shown)
        parts.append(
            f"repository format {repository.format} since {repository.created}" + (f" ({caps})" if caps else "")
        )
    if found is not None:
        parts.append(f"cluster {found.cluster}: system identifier {found.system_identifier}")
    elif cluster:
        parts.append(f"cluster {cluster}: no marker yet (its first wal-push or backup writes it)")
    report.add("marker", OK, "; ".join(parts))


def _check_encryption(report: CheckReport, settings: Settings) -> None:
    enc = settings.encryption
    if not (enc.key_file or enc.key_env):
        report.add("encryption", OK, "not configured: repository objects are stored unencrypted")
        return
    where = f"key file {enc.key_file}" if enc.key_file else f"environment variable {enc.key_env}"
    try:
        from opsdb.stream.crypto import load_key

        key = load_key(key_file=enc.key_file, key_env=enc.key_env)
    except Exception as exc:
        report.add("encryption", CRITICAL, _describe(exc))
        return
    required = ", required" if enc.required else ""
    report.add("encryption", OK, f"key {key.id} loaded from {where}{required}")


def _check_server(
    report: CheckReport,
    cluster: ClusterConfig,
    connect: Callable[..., pg_conn.PgConnection],
    timeout: float,
    runner: Runner,
) -> dict[str, Any]:
    """The server checks; returns what the os_user checks need ({} when the server is unreachable)."""
    try:
        with connect(cluster.conninfo, timeout=timeout, application_name="opsdb check") as c:
            version = c.server_version()
            major = c.server_major()
            standby = c.in_recovery()
            values = c.settings(["wal_level", "archive_mode", "archive_command", "archive_library", "summarize_wal"])
            archiver = c.archiver_stats()
            data_directory = _data_directory(c)
    except Exception as exc:
        report.add("server", CRITICAL, _describe(exc))
        _check_binaries(report, cluster.pg_bin_dir, None, runner)
        for name in SERVER_CHECKS:
            report.add(name, UNKNOWN, "not checked: server unreachable")
        return {}
    role = "standby" if standby else "primary"
    report.add("server", OK, f"PostgreSQL {version}, {role}, at {redact(cluster.conninfo)}")
    _check_binaries(report, cluster.pg_bin_dir, major, runner)
    _check_wal_level(report, values.get("wal_level"))
    mode = values.get("archive_mode")
    _check_archive_mode(report, mode, standby)
    _check_archive_command(report, mode, values.get("archive_command"), values.get("archive_library"))
    _check_archiver(report, mode, standby, archiver)
    _check_summarize_wal(report, major, values.get("summarize_wal"))
    return {
        "archive_mode": mode,
        "archive_command": values.get("archive_command"),
        "standby": standby,
        "data_directory": data_directory,
    }


def _check_summarize_wal(report: CheckReport, major: int, value: str | None) -> None:
    """Whether `backup --incremental` can run: informational (full backups need none of it), so OK."""
    if major < 17 or value is None:
        report.add(
            "summarize_wal", OK, f"not available on PostgreSQL {major}: full backups only (incremental needs 17+)"
        )
    elif value == "on":
        report.add("summarize_wal", OK, "on: `opsdb backup --incremental` can build on the newest backup")
    else:
        report.add("summarize_wal", OK, f"{value}: `opsdb backup --incremental` is refused until summarize_wal = on")


def _data_directory(c: Any) -> str | None:
    try:
        return str(c.data_directory())
    except Exception:  # needs superuser or pg_read_all_settings: the server's environment stays unknown
        return None


def _check_binaries(report: CheckReport, pg_bin_dir: Path | None, server_major: int | None, runner: Runner) -> None:
    """pg_basebackup and pg_dump refuse servers of a newer major version: the client tools must be
    at least the server's major."""
    try:
        bin_dir = find_bin_dir(pg_bin_dir, server_major)
        tools = PgTools(bin_dir)
        majors = {}
        for program in ("pg_basebackup", "pg_dump"):
            out = runner.run(tools.version(program), doing=f"asking {program} for its version").text
            majors[program] = major_of_version(out)
    except Exception as exc:
        report.add("binaries", CRITICAL, _describe(exc))
        return
    older = [p for p, m in majors.items() if server_major is not None and m is not None and m < server_major]
    found = ", ".join(f"{p} {m if m is not None else '?'}" for p, m in majors.items())
    if older:
        report.add(
            "binaries",
            CRITICAL,
            f"{', '.join(older)} in {bin_dir} older than the server ({server_major}): set pg_bin_dir to a newer bin directory",
        )
    else:
        report.add("binaries", OK, f"{found} in {bin_dir}")


def _check_wal_level(report: CheckReport, wal_level: str | None) -> None:
    if wal_level is None:
        report.add("wal_level", UNKNOWN, "cannot read wal_level")
    elif wal_level in ("replica", "logical"):
        report.add("wal_level", OK, wal_level)
    else:
        report.add(
            "wal_level",
            CRITICAL,
            f"{wal_level}: base backups and archiving need 'replica' or 'logical' (restart needed)",
        )


def _check_archive_mode(report: CheckReport, mode: str | None, standby: bool) -> None:
    if mode is None:
        report.add("archive_mode", UNKNOWN, "cannot read archive_mode")
    elif mode == "off":
        report.add(
            "archive_mode",
            CRITICAL,
            "off: no WAL is archived, so point-in-time recovery is impossible (set archive_mode = on and restart)",
        )
    elif mode == "on" and standby:
        report.add("archive_mode", OK, "on (a standby archives only after promotion; 'always' archives here too)")
    else:
        report.add("archive_mode", OK, mode)


def _check_archive_command(report: CheckReport, mode: str | None, command: str | None, library: str | None) -> None:
    name = "archive_command"
    if mode == "off":
        report.add(name, CRITICAL, "not used: archive_mode is off")
    elif library:
        report.add(name, WARNING, f"archive_library {library!r} is set, so WAL goes there, not to opsdb")
    elif command is None:
        report.add(name, UNKNOWN, "cannot read archive_command (needs superuser or pg_read_all_settings)")
    elif not command.strip() or command.strip() == "(disabled)":
        # With archive_mode on, an empty command pauses archiving: WAL piles up in pg_wal until the disk is full.
        report.add(name, CRITICAL, "empty: archiving is paused and WAL accumulates in pg_wal")
    elif "opsdb" not in command or "wal-push" not in command:
        report.add(name, WARNING, f"{command!r} does not call 'opsdb ... wal-push %p'")
    elif "%p" not in command:
        report.add(name, WARNING, f"{command!r} does not pass the WAL file path (%p) to wal-push")
    else:
        report.add(name, OK, command)


def _check_archiver(report: CheckReport, mode: str | None, standby: bool, stats: dict[str, Any]) -> None:
    if mode not in ("on", "always") or (standby and mode != "always"):
        report.add("archiver", OK, "not archiving on this server")
        return
    last_ok, last_fail = stats.get("last_archived_time"), stats.get("last_failed_time")
    ok_wal, failed_wal = stats.get("last_archived_wal"), stats.get("last_failed_wal")
    if last_fail is not None and (last_ok is None or last_fail > last_ok):
        since = f"last success {ok_wal} at {last_ok.isoformat()}" if last_ok else "nothing archived yet"
        report.add(
            "archiver",
            WARNING,
            f"archiving is failing: {failed_wal} failed at {last_fail.isoformat()} "
            f"({stats.get('failed_count', '?')} failures; {since}); see the server log",
        )
    elif last_ok is not None:
        report.add("archiver", OK, f"last archived {ok_wal} at {last_ok.isoformat()}")
    else:
        report.add("archiver", OK, "nothing archived yet")


def _check_replica(
    report: CheckReport, name: str, conninfo: str, connect: Callable[..., pg_conn.PgConnection], timeout: float
) -> None:
    label = f"replica {name}"
    try:
        with connect(conninfo, timeout=timeout, application_name="opsdb check") as c:
            standby = c.in_recovery()
            lsn = c.current_wal_lsn()
    except Exception as exc:
        report.add(label, CRITICAL, _describe(exc))
        return
    if standby:
        report.add(label, OK, f"standby at {redact(conninfo)}, replayed up to {lsn}")
    else:
        report.add(label, WARNING, f"reachable at {redact(conninfo)} but not in recovery (promoted?)")
