"""`opsdb pgbouncer check INI` (status is in ops/pooler/status.py).

check: the text checks (known keys for the target version, types, database entries), file checks
(auth_file present, parseable, not world-readable), pool sums against the server when it can be
reached, and finally the only authoritative test: start the real pgbouncer with a scratch copy of
the file (own port, socket dir, pid and log files) and see it come up, then stop it.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsdb.errors import ConfigError, DatabaseError, UsageError
from opsdb.model.pgbouncer import DatabasePools, ServerLimits, SizingRequest, plan_pools
from opsdb.model.pgbouncer_hba import check_hba
from opsdb.model.pgbouncer_ini import (
    AUTH_FILE_TYPES,
    Finding,
    IniDocument,
    Version,
    check_text,
    check_userlist,
    parse_connstr,
    parse_ini,
    parse_userlist,
    version_str,
)
from opsdb.ops.pooler.target import target_version
from opsdb.pg import pooler
from opsdb.pg.conn import PgConnection, connect
from opsdb.proc import Cmd, Runner

LOAD_TIMEOUT = 10.0
# keys the scratch copy replaces so the trial run cannot touch the real instance's port, files or user
_SCRATCH_KEYS = (
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "pidfile",
    "logfile",
    "user",
    "auth_file",
    "auth_hba_file",
    "syslog",
)


@dataclasses.dataclass(frozen=True)
class IniCheckResult:
    ini_path: str
    findings: tuple[Finding, ...]
    target_version: Version
    loaded: bool | None  # None: no pgbouncer binary to try
    load_detail: str
    worst_case_connections: int | None
    usable_connections: int | None
    target_source: str = "pgbouncer -V"

    @property
    def ok(self) -> bool:
        return self.loaded is not False and not any(f.level == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ini": self.ini_path,
            "ok": self.ok,
            "pgbouncer_version": version_str(self.target_version),
            "pgbouncer_version_source": self.target_source,
            "loaded": self.loaded,
            "load_detail": self.load_detail,
            "worst_case_connections": self.worst_case_connections,
            "usable_connections": self.usable_connections,
            "findings": [f.to_dict() for f in self.findings],
        }


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _file_checks(doc: IniDocument, base: Path, version: Version) -> tuple[list[Finding], int | None]:
    """auth_file, auth_hba_file and TLS files; returns the findings and the number of users in auth_file."""
    findings: list[Finding] = []
    users: int | None = None
    auth_type = (doc.value("auth_type", "md5") or "md5").lower()
    auth_file = doc.value("auth_file")
    if auth_file:
        path = _resolve(base, auth_file)
        if not Path(auth_file).is_absolute():
            findings.append(
                Finding(
                    "warning",
                    f"auth_file {auth_file!r} is relative: PgBouncer resolves it against its working directory",
                )
            )
        try:
            mode = path.stat().st_mode
            text = path.read_text()
        except OSError as exc:
            if auth_type in AUTH_FILE_TYPES:
                findings.append(Finding("error", f"auth_file {path}: {exc.strerror}"))
        else:
            if mode & stat.S_IROTH:
                findings.append(Finding("error", f"auth_file {path} is world-readable (chmod 600)"))
            elif mode & stat.S_IRGRP:
                findings.append(Finding("warning", f"auth_file {path} is group-readable"))
            entries, problems = parse_userlist(text)
            findings += problems + check_userlist(entries, auth_type)
            users = len(entries)
    hba_file = doc.value("auth_hba_file")
    if hba_file and _resolve(base, hba_file).is_file():
        path = _resolve(base, hba_file)
        try:
            findings += check_hba(path.read_text(), version, path.parent)
        except OSError as exc:
            findings.append(Finding("error", f"auth_hba_file {path}: {exc.strerror}"))
    for key in (
        "auth_hba_file",
        "client_tls_cert_file",
        "client_tls_key_file",
        "client_tls_ca_file",
        "server_tls_ca_file",
        "server_tls_cert_file",
        "server_tls_key_file",
    ):
        value = doc.value(key)
        if not value:
            continue
        path = _resolve(base, value)
        if not path.is_file():
            findings.append(Finding("error", f"{key} {value}: no such file"))
        elif key.endswith("_key_file") and path.stat().st_mode & stat.S_IROTH:
            findings.append(Finding("warning", f"{key} {value} is world-readable (chmod 600)"))
    return findings, users


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def sizing_request(
    doc: IniDocument, limits: ServerLimits, users: int | None, *, instances: int, server_reserve: int
) -> SizingRequest:
    """The pool arithmetic of an existing file (PgBouncer's defaults where a key is absent)."""
    pools = []
    for name, value in sorted(doc.section("databases").items()):
        if name == "*":
            continue
        try:
            params = parse_connstr(value)
        except ValueError:
            continue
        reserve = params.get("reserve_pool_size", params.get("reserve_pool"))
        pools.append(
            DatabasePools(
                name,
                _int(params.get("pool_size"), 0) if "pool_size" in params else None,
                _int(reserve, 0) if reserve is not None else None,
                _int(params.get("max_db_connections"), 0) if "max_db_connections" in params else None,
            )
        )
    return SizingRequest(
        limits=limits,
        databases=tuple(pools),
        users=None if doc.value("auth_user") else users,
        instances=instances,
        server_reserve=server_reserve,
        default_pool_size=_int(doc.value("default_pool_size"), 20),
        min_pool_size=_int(doc.value("min_pool_size"), 0),
        reserve_pool_size=_int(doc.value("reserve_pool_size"), 0),
        max_db_connections=_int(doc.value("max_db_connections"), 0),
        max_user_connections=_int(doc.value("max_user_connections"), 0),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def scratch_copy(text: str, scratch: Path, port: int, copies: dict[str, Path]) -> str:
    """The file with its port, sockets, pid/log files and auth files pointed into `scratch`."""
    overrides = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": str(scratch),
        "pidfile": str(scratch / "pgbouncer.pid"),
        "logfile": str(scratch / "pgbouncer.log"),
        **{k: str(v) for k, v in copies.items()},
    }
    out: list[str] = []
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip().lower()
            out.append(line)
            if section == "pgbouncer":
                out += [f"{k} = {v}" for k, v in overrides.items()]
            continue
        key = stripped.split("=", 1)[0].strip().lower() if "=" in stripped and stripped[0] not in ";#" else None
        if section == "pgbouncer" and key in _SCRATCH_KEYS:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _chown(path: Path, user: str | None) -> None:
    if user is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _problem_lines(log: str) -> str:
    lines = [ln for ln in log.splitlines() if any(w in ln for w in ("ERROR", "FATAL", "WARNING"))]
    return " | ".join(ln.strip() for ln in lines[-5:]) or (log.strip().splitlines() or ["no output"])[-1]


def hba_log_problems(log: str) -> list[str]:
    """PgBouncer's complaints about the HBA file: it starts anyway and drops the lines (or every rule)."""
    return [
        re.sub(r"^.*?\[\d+\]\s+", "", ln.strip())  # drop "2026-11-22 00:08:00.846 UTC [pid] "
        for ln in log.splitlines()
        if "hba" in ln.lower() and any(w in ln for w in ("WARNING", "ERROR"))
    ]


def try_load(
    text: str, base: Path, doc: IniDocument, *, runner: Runner, binary: str, run_as: str | None
) -> tuple[bool, str, list[str]]:
    """Start pgbouncer on a scratch copy; (came up, detail, HBA problems it logged). Always stopped
    and cleaned up."""
    scratch = Path(tempfile.mkdtemp(prefix="opsdb-pgbouncer-check-", dir="/tmp"))
    try:
        _chown(scratch, run_as)
        copies: dict[str, Path] = {}
        for key in ("auth_file", "auth_hba_file"):
            value = doc.value(key)
            source = _resolve(base, value) if value else None
            if source is not None and source.is_file():
                target = scratch / f"{key}.copy"
                shutil.copyfile(source, target)
                os.chmod(target, 0o600)
                _chown(target, run_as)
                copies[key] = target
        port = _free_port()
        ini = scratch / "pgbouncer.ini"
        ini.write_text(scratch_copy(text, scratch, port, copies))
        _chown(ini, run_as)
        out_log = scratch / "stdout.log"
        proc = runner.spawn(Cmd((binary, str(ini)), run_as=run_as, cwd=str(scratch)), log_path=out_log)
        try:
            deadline = time.monotonic() + LOAD_TIMEOUT
            up = False
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _listening(port):
                    up = True
                    break
                time.sleep(0.1)
        finally:
            proc.terminate(timeout=5)
        log = out_log.read_text(errors="replace") if out_log.exists() else ""
        hba = hba_log_problems(log)
        if up:
            return True, f"pgbouncer started with this file on port {port} and was stopped again", hba
        if proc.poll() is None:
            return False, f"pgbouncer did not listen within {LOAD_TIMEOUT:.0f}s: {_problem_lines(log)}", hba
        return False, f"pgbouncer refused the file: {_problem_lines(log)}", hba
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_ini_file(
    path: Path,
    *,
    runner: Runner,
    pgbouncer_bin: str | None,
    run_as: str | None,
    server_limits: Callable[[], ServerLimits] | None,
    instances: int = 1,
    server_reserve: int = 5,
    target_version_override: str | None = None,
) -> IniCheckResult:
    """Every check of an existing file; the target version is pgbouncer.target_version when given,
    else what the binary reports. The binary is started whenever there is one."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"unable to read {path}: {exc.strerror}") from None
    target_info = target_version(target_version_override, runner, pgbouncer_bin)
    target = target_info.version
    doc = parse_ini(text)
    base = path.resolve().parent
    findings = check_text(doc, target)
    file_findings, users = _file_checks(doc, base, target)
    findings += file_findings
    worst = usable = None
    if "*" in doc.section("databases"):
        findings.append(Finding("warning", "a '*' fallback database makes the number of pools unbounded"))
    if server_limits is not None:
        try:
            limits = server_limits()
        except DatabaseError as exc:
            findings.append(Finding("warning", f"pool sums not checked against the server: {exc}"))
        else:
            try:
                plan = plan_pools(
                    sizing_request(doc, limits, users, instances=instances, server_reserve=server_reserve)
                )
                worst, usable = plan.worst_case_total, plan.usable
            except ConfigError as exc:
                findings.append(Finding("error", str(exc)))
    loaded: bool | None = None
    detail = "no pgbouncer binary found: not started"
    if pgbouncer_bin is not None and target_info.source != "assumed":
        loaded, detail, hba_logged = try_load(text, base, doc, runner=runner, binary=pgbouncer_bin, run_as=run_as)
        # PgBouncer starts anyway with a broken HBA file, so its log is the only verdict on it
        findings += [Finding("error", f"pgbouncer logged: {line}") for line in hba_logged]
    return IniCheckResult(str(path), tuple(findings), target, loaded, detail, worst, usable, target_info.source)


def server_limits_reader(
    conninfo: str, *, connect_fn: Callable[..., PgConnection] = connect
) -> Callable[[], ServerLimits]:
    """A deferred read of the server's connection limits (only called when the check gets there)."""

    def read() -> ServerLimits:
        with connect_fn(conninfo, timeout=5) as conn:
            return pooler.server_limits(conn)

    return read
