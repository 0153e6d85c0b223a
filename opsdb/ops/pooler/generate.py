"""`opsdb pgbouncer generate`: reads the server (limits; databases, users and verifiers with --discover),
has the files built (ops/pooler/files.py) for the target PgBouncer (ops/pooler/target.py) and writes
pgbouncer.ini and userlist.txt, 0600, atomically.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from opsdb.config import PgbouncerConfig
from opsdb.errors import ConfigError, UsageError
from opsdb.model.pgbouncer_hba import check_hba
from opsdb.model.pgbouncer_ini import Version, version_str
from opsdb.ops.pooler.files import GeneratedFiles, ServerFacts, build_files
from opsdb.ops.pooler.target import find_pgbouncer, target_version
from opsdb.pg import pooler
from opsdb.pg.conn import PgConnection, connect
from opsdb.proc import Runner

Connect = Callable[..., PgConnection]


@dataclasses.dataclass(frozen=True)
class GenerateResult:
    ini_path: str
    userlist_path: str | None
    files: GeneratedFiles

    def to_dict(self) -> dict[str, object]:
        plan = self.files.plan
        return {
            "ini_path": self.ini_path,
            "userlist_path": self.userlist_path,
            "pgbouncer_version": version_str(self.files.target_version),
            "pgbouncer_version_source": self.files.target_source,
            "databases": list(self.files.databases),
            "users": None if self.files.users is None else list(self.files.users),
            "sizing": {
                "usable": plan.usable,
                "per_instance": plan.per_instance,
                "default_pool_size": plan.default_pool_size,
                "max_db_connections": plan.max_db_connections,
                "worst_case_total": plan.worst_case_total,
                "explanation": list(plan.explanation),
            },
            "notes": list(self.files.notes),
        }


def discover(conn: PgConnection, cfg: PgbouncerConfig, *, with_catalog: bool) -> ServerFacts:
    """Server limits always; databases, pooled users and their verifiers with --discover."""
    limits = pooler.server_limits(conn)
    if not with_catalog:
        return ServerFacts(limits)
    users = tuple(cfg.users) if cfg.users is not None else tuple(pooler.login_roles(conn))
    if not users:
        # A fresh cluster: superusers are not pooled, so there is nobody to size pools for.
        raise ConfigError(
            "unable to size pgbouncer pools: --discover found no login role other than superusers (they are not pooled)",
            hint="create the application's role (CREATE ROLE app LOGIN PASSWORD '...'), or list the users in pgbouncer.users",
        )
    console = set(cfg.admin_users) | set(cfg.stats_users)
    wanted = sorted(set(users) | console | ({cfg.auth_user} if cfg.auth_user else set()))
    verifiers = pooler.password_verifiers(conn, wanted) if wanted else {}
    return ServerFacts(limits, tuple(pooler.databases(conn)), users, verifiers, discovered=True)


def _beside(out_dir: Path, value: str) -> Path:
    """A configured file path as written into pgbouncer.ini: relative ones are taken from --out-dir."""
    path = Path(value)
    return path if path.is_absolute() else out_dir / path


def _hba_notes(path: Path, version: Version) -> list[str]:
    """generate does not write the HBA file; it says when the one named would reject logins."""
    try:
        text = path.read_text()
    except OSError as exc:
        return [f"auth_hba_file {path}: {exc.strerror}; PgBouncer rejects every login until it exists"]
    return [f"{path}: {f.message}" for f in check_hba(text, version, path.parent)]


def _write_private(path: Path, text: str) -> None:
    """Atomically replace path with text, mode 0600 from the start (never briefly world-readable)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate(
    cfg: PgbouncerConfig,
    server_conninfo: str,
    out_dir: Path,
    *,
    discover_catalog: bool,
    runner: Runner,
    connect_fn: Connect = connect,
    pgbouncer_bin: str | None = None,
) -> GenerateResult:
    """Read the server, size the pools, write pgbouncer.ini (and userlist.txt with --discover), 0600."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"unable to write to {out_dir}: not a directory")
    target = target_version(cfg.target_version, runner, pgbouncer_bin or find_pgbouncer(cfg.binary))
    with connect_fn(server_conninfo) as conn:
        facts = discover(conn, cfg, with_catalog=discover_catalog)
    out_dir = out_dir.resolve()
    auth_path = _beside(out_dir, cfg.auth_file)
    hba_path = _beside(out_dir, cfg.auth_hba_file) if cfg.auth_hba_file else None
    files = build_files(
        cfg,
        server_conninfo,
        facts,
        auth_file=str(auth_path),
        target=target,
        hba_file=str(hba_path) if hba_path else None,
    )
    if hba_path is not None:
        files = dataclasses.replace(files, notes=files.notes + tuple(_hba_notes(hba_path, target.version)))
    out_dir.mkdir(parents=True, exist_ok=True)
    ini_path = out_dir / "pgbouncer.ini"
    _write_private(ini_path, files.ini)
    userlist_path = None
    if files.userlist is not None:
        auth_path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(auth_path, files.userlist)
        userlist_path = str(auth_path)
    return GenerateResult(str(ini_path), userlist_path, files)
