"""`pgbouncer generate`'s file building: pgbouncer.ini and userlist.txt as text, from [pgbouncer], the
server's figures and the discovered verifiers (no I/O; ops/pooler/generate.py reads the server and writes).

build_files() is deterministic: the same config, server figures and discovered verifiers give the
same bytes (sorted keys and databases, no timestamps), so a config-management run changes nothing
when nothing changed. Settings newer than the target PgBouncer are written commented out, with why.
"""

from __future__ import annotations

import dataclasses

from opsdb import __version__
from opsdb.config import PgbouncerConfig
from opsdb.errors import UsageError
from opsdb.model.pgbouncer import DatabasePools, ServerLimits, SizingPlan, SizingRequest, fd_estimate, plan_pools
from opsdb.model.pgbouncer_ini import PGBOUNCER_KEYS, UserEntry, Version, version_str
from opsdb.ops.pooler.target import TargetVersion
from opsdb.pg.conninfo import parse_conninfo
from opsdb.render.pgbouncer import IniEntry, connstr, quote_db_name, render_ini, render_userlist

# bounded by pg_authid.rolvaliduntil like PgBouncer's own default since 1.24.1, and schema-qualified
# so a client-set search_path cannot redirect it (CVE-2025-12819)
DEFAULT_AUTH_QUERY = (
    "SELECT rolname, CASE WHEN rolvaliduntil < pg_catalog.now() THEN NULL ELSE rolpassword END "
    "FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin"
)


@dataclasses.dataclass(frozen=True)
class ServerFacts:
    """What generate learned from the cluster (or was given in tests)."""

    limits: ServerLimits
    databases: tuple[str, ...] = ()  # discovered; empty without --discover
    users: tuple[str, ...] | None = None  # pooled users; None = not known
    verifiers: dict[str, str | None] = dataclasses.field(default_factory=dict)
    discovered: bool = False  # databases, users and verifiers were read (--discover)


@dataclasses.dataclass(frozen=True)
class GeneratedFiles:
    ini: str
    userlist: str | None  # None: nothing to write (no --discover)
    plan: SizingPlan
    databases: tuple[str, ...]
    users: tuple[str, ...] | None
    target_version: Version
    notes: tuple[str, ...]
    target_source: str = "pgbouncer -V"


def _pools_for(cfg: PgbouncerConfig, discovered: tuple[str, ...]) -> dict[str, tuple[str, DatabasePools]]:
    """pgbouncer name -> (server dbname, overrides): config entries win over discovered names."""
    out: dict[str, tuple[str, DatabasePools]] = {name: (name, DatabasePools(name)) for name in discovered}
    for name, db in cfg.databases.items():
        out[name] = (
            db.dbname or name,
            DatabasePools(name, db.pool_size, db.reserve_pool_size, db.max_db_connections),
        )
    if "pgbouncer" in out:
        raise UsageError("the database name 'pgbouncer' is reserved for PgBouncer's admin console")
    return out


def _check_verifiers(cfg: PgbouncerConfig, users: tuple[str, ...], verifiers: dict[str, str | None]) -> None:
    missing = [u for u in users if u not in verifiers]
    if missing:
        raise UsageError(f"unable to generate userlist.txt: no such role(s) on the server: {', '.join(missing)}")
    no_password = [u for u, v in sorted(verifiers.items()) if not v]
    if no_password:
        raise UsageError(f"unable to generate userlist.txt: no password set for {', '.join(no_password)}")
    if cfg.auth_type == "scram-sha-256":
        md5 = [u for u, v in sorted(verifiers.items()) if v and not v.startswith("SCRAM-SHA-256$")]
        if md5:
            raise UsageError(
                f"unable to generate userlist.txt: {', '.join(md5)} have MD5 passwords, which "
                "auth_type scram-sha-256 cannot use",
                hint="set password_encryption = 'scram-sha-256' and set the password again (\\password in psql)",
            )


def _auth_checks(
    cfg: PgbouncerConfig, version: Version, pools: dict[str, tuple[str, DatabasePools]], hba_file: str | None
) -> list[str]:
    """Refuse auth settings PgBouncer would misread; return notes for the harmless ones."""
    notes = []
    if cfg.auth_type == "hba" and not hba_file:
        raise UsageError('auth_type = "hba" needs pgbouncer.auth_hba_file')
    if hba_file and cfg.auth_type != "hba":
        notes.append(f"auth_hba_file is written but only read with auth_type = hba (auth_type is {cfg.auth_type})")
    if cfg.auth_dbname:
        if not cfg.auth_user:
            raise UsageError("pgbouncer.auth_dbname is only used with auth_user (auth_query runs as that user)")
        if cfg.auth_dbname not in pools:
            raise UsageError(
                f"pgbouncer.auth_dbname {cfg.auth_dbname!r} is not one of the pooled databases "
                f"({', '.join(sorted(pools))}): PgBouncer looks it up in [databases]"
            )
        since = PGBOUNCER_KEYS["auth_dbname"].since
        if version < since:
            # commenting it out would silently move auth_query into every client's database
            raise UsageError(
                f"pgbouncer.auth_dbname needs PgBouncer >= {version_str(since)}, target is {version_str(version)}",
                hint="remove auth_dbname (auth_query then runs in each client's database) or upgrade PgBouncer",
            )
    return notes


def _main_entries(cfg: PgbouncerConfig, plan: SizingPlan, auth_file: str, hba_file: str | None) -> list[IniEntry]:
    cfg_note = "from [pgbouncer]"
    entries = [
        IniEntry("listen_addr", cfg.listen_addr),
        IniEntry("listen_port", str(cfg.listen_port)),
        IniEntry("pool_mode", cfg.pool_mode),
        IniEntry(
            "max_client_conn",
            str(cfg.max_client_conn),
            f"fd need per process ~ {fd_estimate(cfg.max_client_conn, plan)}",
        ),
        IniEntry(
            "default_pool_size",
            str(plan.default_pool_size),
            "computed (see sizing above)" if plan.default_pool_size_computed else cfg_note,
        ),
        IniEntry("min_pool_size", str(cfg.min_pool_size)),
        IniEntry("reserve_pool_size", str(cfg.reserve_pool_size)),
        IniEntry("reserve_pool_timeout", f"{cfg.reserve_pool_timeout:g}"),
        IniEntry(
            "max_db_connections",
            str(plan.max_db_connections),
            "computed (see sizing above)" if plan.max_db_connections_computed else cfg_note,
        ),
        IniEntry(
            "max_user_connections",
            str(cfg.max_user_connections),
            "0 = unlimited" if cfg.max_user_connections == 0 else "caps each user over all databases (see sizing)",
        ),
        IniEntry("server_lifetime", str(cfg.server_lifetime)),
        IniEntry("server_idle_timeout", str(cfg.server_idle_timeout)),
        IniEntry("query_wait_timeout", str(cfg.query_wait_timeout)),
        IniEntry("auth_type", cfg.auth_type),
        IniEntry("auth_file", auth_file),
        IniEntry("client_tls_sslmode", cfg.client_tls_sslmode),
        IniEntry("server_tls_sslmode", cfg.server_tls_sslmode),
        IniEntry("ignore_startup_parameters", ",".join(cfg.ignore_startup_parameters)),
        IniEntry("max_prepared_statements", str(cfg.max_prepared_statements)),
    ]
    optional = {
        "unix_socket_dir": cfg.unix_socket_dir,
        "admin_users": ", ".join(cfg.admin_users) or None,
        "stats_users": ", ".join(cfg.stats_users) or None,
        "client_tls_cert_file": cfg.client_tls_cert_file,
        "client_tls_key_file": cfg.client_tls_key_file,
        "client_tls_ca_file": cfg.client_tls_ca_file,
        "server_tls_ca_file": cfg.server_tls_ca_file,
        "server_tls_cert_file": cfg.server_tls_cert_file,
        "server_tls_key_file": cfg.server_tls_key_file,
        "auth_hba_file": hba_file,
        "logfile": cfg.logfile,
        "pidfile": cfg.pidfile,
    }
    entries += [IniEntry(k, v) for k, v in optional.items() if v is not None]
    if cfg.auth_user:
        entries.append(IniEntry("auth_user", cfg.auth_user))
        query_note = None if cfg.auth_query else "schema-qualified default; honours VALID UNTIL"
        entries.append(IniEntry("auth_query", cfg.auth_query or DEFAULT_AUTH_QUERY, query_note))
    if cfg.auth_dbname:
        entries.append(IniEntry("auth_dbname", cfg.auth_dbname, "auth_query runs in this database"))
    return entries


def _gate(entries: list[IniEntry], version: Version) -> list[IniEntry]:
    out = []
    for entry in entries:
        since = PGBOUNCER_KEYS[entry.key].since
        if since > version:
            reason = f"needs PgBouncer >= {version_str(since)}, target is {version_str(version)}"
            entry = dataclasses.replace(entry, skipped=reason)
        out.append(entry)
    return out


def build_files(
    cfg: PgbouncerConfig,
    server_conninfo: str,
    facts: ServerFacts,
    *,
    auth_file: str,
    target: TargetVersion,
    hba_file: str | None = None,
) -> GeneratedFiles:
    """The two files as text (no I/O). Raises ConfigError when the pools do not fit, UsageError for bad input.
    `auth_file` and `hba_file` are the paths to write into the file (generate makes them absolute)."""
    notes: list[str] = []
    if target.source == "assumed":
        notes.append(f"no pgbouncer binary found: assumed PgBouncer {version_str(target.version)}")
    if cfg.client_tls_sslmode != "disable" and not (cfg.client_tls_cert_file and cfg.client_tls_key_file):
        raise UsageError(
            f"client_tls_sslmode = {cfg.client_tls_sslmode} needs client_tls_cert_file and client_tls_key_file"
        )
    pools = _pools_for(cfg, facts.databases)
    notes += _auth_checks(cfg, target.version, pools, hba_file)
    users = tuple(cfg.users) if cfg.users is not None else facts.users
    plan = plan_pools(
        SizingRequest(
            limits=facts.limits,
            databases=tuple(p for _, p in pools.values()),
            users=len(users) if users is not None else None,
            instances=cfg.instances,
            server_reserve=cfg.server_reserve,
            default_pool_size=cfg.default_pool_size,
            min_pool_size=cfg.min_pool_size,
            reserve_pool_size=cfg.reserve_pool_size,
            max_db_connections=cfg.max_db_connections,
            max_user_connections=cfg.max_user_connections,
        )
    )
    server = parse_conninfo(server_conninfo)
    target_params: dict[str, str | int] = {k: server[k] for k in ("host", "port") if k in server}
    db_entries = []
    for name in sorted(pools):
        dbname, overrides = pools[name]
        params: dict[str, str | int] = {**target_params, "dbname": dbname}
        source = cfg.databases.get(name)
        if source is not None:
            extra = {
                "pool_size": source.pool_size,
                "pool_mode": source.pool_mode,
                "max_db_connections": source.max_db_connections,
                "reserve_pool": source.reserve_pool_size,  # the name every version accepts
            }
            params.update({k: v for k, v in extra.items() if v is not None})
        db_entries.append(IniEntry(quote_db_name(name), connstr(params)))

    header = [
        f"pgbouncer.ini generated by opsdb {__version__}; edit [pgbouncer] in opsdb.toml and regenerate.",
        f"Target: {target.describe()}.",
        f"Server: max_connections={facts.limits.max_connections}, superuser_reserved_connections="
        f"{facts.limits.superuser_reserved_connections}, reserved_connections={facts.limits.reserved_connections}.",
        f"Pools: {len(pools)} databases x "
        + (f"{len(users)} users" if users is not None else "users not known (max_db_connections bounds them)")
        + f", {cfg.instances} pgbouncer instance(s).",
        "Sizing:",
        *(f"  {line}" for line in plan.explanation),
        "Values not marked otherwise come from [pgbouncer] (or its defaults).",
    ]
    main = _gate(_main_entries(cfg, plan, auth_file, hba_file), target.version)
    ini = render_ini(header, [("pgbouncer", main), ("databases", db_entries)])

    userlist = None
    if facts.discovered:
        wanted = tuple(sorted(set(users or ()) | ({cfg.auth_user} if cfg.auth_user else set())))
        verifiers = {u: facts.verifiers[u] for u in wanted if u in facts.verifiers}
        _check_verifiers(cfg, wanted, verifiers)
        # console users log in through userlist.txt too; they need not be PostgreSQL roles, so a
        # missing one is a note, not a refusal
        for console_user in sorted(set(cfg.admin_users) | set(cfg.stats_users)):
            if console_user in verifiers:
                continue
            if facts.verifiers.get(console_user):
                verifiers[console_user] = facts.verifiers[console_user]
            else:
                notes.append(f"admin/stats user {console_user!r} has no verifier: add it to userlist.txt by hand")
        userlist = render_userlist(UserEntry(u, s or "") for u, s in verifiers.items())
        if not wanted:
            notes.append("no login roles to pool: userlist.txt is empty")
    else:
        notes.append("userlist.txt not written: pass --discover to read the users' SCRAM verifiers")
    skipped = [e.key for e in main if e.skipped]
    if skipped:
        notes.append(f"not written for PgBouncer {version_str(target.version)}: {', '.join(skipped)}")
    return GeneratedFiles(ini, userlist, plan, tuple(sorted(pools)), users, target.version, tuple(notes), target.source)
