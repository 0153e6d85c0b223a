"""PgBouncer pool sizing: how many server connections the pools may open, against what the server accepts.

Pure arithmetic, no I/O. The budget (ops-conventions §1.8):

    usable       = max_connections - superuser_reserved_connections - reserved_connections - server_reserve
    per_instance = usable // instances                       (every pgbouncer process gets an equal share)
    pool_size    = per_instance // (databases * users) - reserve_pool_size     (when not configured)
    db_cap       = per_instance // databases                 (max_db_connections, when not configured)

A pool is one (database, user) pair; it can open pool_size + reserve_pool_size server connections,
max_db_connections caps all pools of one database together, and max_user_connections (when the
users are known) caps each user over all databases. The worst case across all
instances must not exceed `usable`, otherwise the configuration is refused with the arithmetic.
"""

from __future__ import annotations

import dataclasses

from opsdb.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What the PostgreSQL server accepts (read from the server or given in tests)."""

    max_connections: int
    superuser_reserved_connections: int = 3
    reserved_connections: int = 0  # PG16+ pg_use_reserved_connections slots


@dataclasses.dataclass(frozen=True)
class DatabasePools:
    """One [databases] entry and its per-database overrides (None: use the global value)."""

    name: str
    pool_size: int | None = None
    reserve_pool_size: int | None = None
    max_db_connections: int | None = None


@dataclasses.dataclass(frozen=True)
class SizingRequest:
    limits: ServerLimits
    databases: tuple[DatabasePools, ...]
    users: int | None  # login users that get pools; None = not known (auth_query decides at login)
    instances: int = 1
    server_reserve: int = 5
    default_pool_size: int | None = None
    min_pool_size: int = 0
    reserve_pool_size: int = 0
    max_db_connections: int | None = None
    max_user_connections: int = 0  # per user over all databases; 0 = unlimited


@dataclasses.dataclass(frozen=True)
class DatabaseSizing:
    name: str
    pool_size: int
    reserve_pool_size: int
    max_db_connections: int  # 0 = unlimited
    worst_case: int  # server connections this database can hold open, per pgbouncer instance


@dataclasses.dataclass(frozen=True)
class SizingPlan:
    """The numbers to write, and the lines explaining where each came from."""

    usable: int
    per_instance: int
    default_pool_size: int
    default_pool_size_computed: bool
    max_db_connections: int
    max_db_connections_computed: bool
    databases: tuple[DatabaseSizing, ...]
    worst_case_total: int  # over all instances
    explanation: tuple[str, ...]


def _usable_line(limits: ServerLimits, server_reserve: int, usable: int) -> str:
    reserved = f" - {limits.reserved_connections} reserved_connections" if limits.reserved_connections else ""
    return (
        f"usable = {limits.max_connections} max_connections - {limits.superuser_reserved_connections} "
        f"superuser_reserved_connections{reserved} - {server_reserve} server_reserve = {usable}"
    )


def plan_pools(req: SizingRequest) -> SizingPlan:
    """Compute pool sizes, or raise ConfigError (exit 2) showing the arithmetic that does not fit."""
    limits = req.limits
    if req.instances < 1:
        raise ConfigError("pgbouncer.instances must be at least 1")
    if not req.databases:
        raise ConfigError(
            "no databases to pool",
            hint="configure [pgbouncer.databases.NAME] or pass --discover to list the cluster's databases",
        )
    usable = (
        limits.max_connections
        - limits.superuser_reserved_connections
        - limits.reserved_connections
        - req.server_reserve
    )
    lines = [_usable_line(limits, req.server_reserve, usable)]
    if usable < 1:
        raise ConfigError(f"unable to size pgbouncer pools: no server connections left ({lines[0]})")
    per_instance = usable // req.instances
    lines.append(f"per_instance = {usable} usable // {req.instances} instances = {per_instance}")
    if per_instance < 1:
        raise ConfigError(f"unable to size pgbouncer pools: {lines[-1]} leaves no connection per instance")

    n_db = len(req.databases)
    n_users = req.users
    if n_users == 0:
        raise ConfigError("unable to size pgbouncer pools: there are no users to pool", hint="set pgbouncer.users")
    pool_users = n_users if n_users is not None else 1
    if req.default_pool_size is None:
        pairs = n_db * pool_users
        share = per_instance // pairs
        pool_size = share - req.reserve_pool_size
        who = f"{n_users} users" if n_users is not None else "1 user (users unknown)"
        lines.append(
            f"default_pool_size = {per_instance} per_instance // ({n_db} databases * {who}) "
            f"- {req.reserve_pool_size} reserve_pool_size = {pool_size}"
        )
        if pool_size < 1:
            raise ConfigError(
                f"unable to size pgbouncer pools: {lines[-1]}; there are more pools than server connections",
                hint="raise max_connections, lower instances/server_reserve/reserve_pool_size, or pool fewer databases/users",
            )
        pool_computed = True
    else:
        pool_size = req.default_pool_size
        lines.append(f"default_pool_size = {pool_size} (configured)")
        pool_computed = False
    if req.min_pool_size > pool_size:
        raise ConfigError(f"pgbouncer.min_pool_size {req.min_pool_size} is larger than default_pool_size {pool_size}")

    if req.max_db_connections is None:
        db_cap = per_instance // n_db
        lines.append(f"max_db_connections = {per_instance} per_instance // {n_db} databases = {db_cap}")
        cap_computed = True
    else:
        db_cap = req.max_db_connections
        lines.append(f"max_db_connections = {db_cap} (configured{', 0 = unlimited' if db_cap == 0 else ''})")
        cap_computed = False

    sized: list[DatabaseSizing] = []
    for db in sorted(req.databases, key=lambda d: d.name):
        size = db.pool_size if db.pool_size is not None else pool_size
        reserve = db.reserve_pool_size if db.reserve_pool_size is not None else req.reserve_pool_size
        cap = db.max_db_connections if db.max_db_connections is not None else db_cap
        if n_users is None and cap == 0:
            raise ConfigError(
                f"unable to size pgbouncer pools: database {db.name!r} has no max_db_connections and the "
                "users are not known, so its pools are unbounded",
                hint="set pgbouncer.users (or use --discover), or set max_db_connections",
            )
        pools = pool_users * (size + reserve)
        worst = pools if cap == 0 else (min(cap, pools) if n_users is not None else cap)
        sized.append(DatabaseSizing(db.name, size, reserve, cap, worst))

    per_instance_worst = sum(d.worst_case for d in sized)
    terms = f"({' + '.join(f'{d.worst_case} {d.name}' for d in sized)})"
    if req.max_user_connections and n_users is not None:
        # every user's server connections over all databases are capped, so the users cap the total too
        user_cap = n_users * req.max_user_connections
        lines.append(
            f"users cap = {n_users} users * {req.max_user_connections} max_user_connections = {user_cap} per instance"
        )
        if user_cap < per_instance_worst:
            terms = f"min({terms}, {user_cap} users cap)"
            per_instance_worst = user_cap
    total = per_instance_worst * req.instances
    worst_line = f"worst case = {terms} * {req.instances} instances = {total}"
    lines.append(f"{worst_line} <= {usable} usable")
    if total > usable:
        detail = "; ".join(_worst_case_detail(d, n_users) for d in sized)
        raise ConfigError(
            f"pgbouncer pools can open {total} server connections but the server accepts {usable}: "
            f"{lines[0]}; {worst_line} ({detail})",
            hint="lower default_pool_size/reserve_pool_size/instances or set max_db_connections",
        )
    return SizingPlan(
        usable=usable,
        per_instance=per_instance,
        default_pool_size=pool_size,
        default_pool_size_computed=pool_computed,
        max_db_connections=db_cap,
        max_db_connections_computed=cap_computed,
        databases=tuple(sized),
        worst_case_total=total,
        explanation=tuple(lines),
    )


def _worst_case_detail(d: DatabaseSizing, n_users: int | None) -> str:
    users = f"{n_users} users" if n_users is not None else "unknown users"
    cap = "unlimited" if d.max_db_connections == 0 else str(d.max_db_connections)
    return f"{d.name}: {users} * ({d.pool_size} pool + {d.reserve_pool_size} reserve), max_db_connections {cap}"


def fd_estimate(max_client_conn: int, plan: SizingPlan) -> int:
    """File descriptors one pgbouncer needs: clients plus every server connection it can open."""
    return max_client_conn + sum(d.worst_case for d in plan.databases)
