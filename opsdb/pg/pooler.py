"""What a PgBouncer configuration needs to know from the server: connection limits, databases,
login roles, and the stored password verifiers (read, never a plain password).

Reading pg_authid needs a superuser; the verifier is copied byte for byte so PgBouncer can log in to
PostgreSQL with it (SCRAM pass-through needs the same salt and iterations, ops-conventions §1.3).
"""

from __future__ import annotations

from collections.abc import Sequence

from opsdb.errors import DatabaseError
from opsdb.model.pgbouncer import ServerLimits
from opsdb.model.pgbouncer_ini import UserEntry
from opsdb.pg.conn import PgConnection

LOGIN_ROLES_SQL = """
SELECT rolname FROM pg_roles
WHERE rolcanlogin AND NOT rolsuper AND rolname !~ '^pg_'
ORDER BY rolname
"""

VERIFIERS_SQL = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s) ORDER BY rolname"


def server_limits(conn: PgConnection) -> ServerLimits:
    values = conn.settings(["max_connections", "superuser_reserved_connections", "reserved_connections"])
    return ServerLimits(
        max_connections=int(values["max_connections"] or 100),
        superuser_reserved_connections=int(values["superuser_reserved_connections"] or 0),
        reserved_connections=int(values["reserved_connections"] or 0),  # PG16+; None before
    )


def databases(conn: PgConnection) -> list[str]:
    """Databases that accept connections, templates excluded."""
    return conn.databases(exclude_templates=True)


def login_roles(conn: PgConnection) -> list[str]:
    """The default users to pool: roles that can log in and are not superusers."""
    return [row["rolname"] for row in conn.fetchall(LOGIN_ROLES_SQL)]


def password_verifiers(conn: PgConnection, users: Sequence[str]) -> dict[str, str | None]:
    """user -> stored verifier (SCRAM-SHA-256$..., md5..., or None when no password is set).
    A user missing from the result does not exist."""
    try:
        rows = conn.fetchall(VERIFIERS_SQL, (list(users),))
    except DatabaseError as exc:
        raise DatabaseError(f"unable to read password verifiers (pg_authid needs a superuser): {exc}") from None
    return {row["rolname"]: row["rolpassword"] for row in rows}


def user_entries(verifiers: dict[str, str | None]) -> list[UserEntry]:
    return [UserEntry(user, secret) for user, secret in sorted(verifiers.items()) if secret]
