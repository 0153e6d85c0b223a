"""How a new standby reaches its primary: the primary_conninfo it is given, the passfile holding the
password, and the physical replication slot it streams from.

The password never goes into postgresql.auto.conf: the walreceiver is libpq, which reads a passfile
(https://www.postgresql.org/docs/current/libpq-pgpass.html) named by the `passfile` keyword. opsdb writes
one next to the data directory (`DIR.pgpass`, 0600, owned by the server's OS user) rather than inside it,
so base backups of the standby (and anything that copies its data directory) never carry the password.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import re
from collections.abc import Callable
from pathlib import Path

from opsdb.errors import UsageError
from opsdb.pg.conn import PgConnection
from opsdb.pg.conninfo import make_conninfo, parse_conninfo

Connect = Callable[..., PgConnection]
SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
PASSFILE_SUFFIX = ".pgpass"


@dataclasses.dataclass(frozen=True)
class StandbyLink:
    """primary_conninfo for the standby (no password in it) and, when the cluster's conninfo has a
    password, the passfile it points at."""

    primary_conninfo: str
    passfile: Path | None
    _passfile_text: str = dataclasses.field(default="", repr=False)


def check_slot_name(slot: str | None) -> None:
    if slot is not None and not SLOT_NAME.match(slot):
        raise UsageError(f"invalid slot name {slot!r}: use lower-case letters, digits and _ (at most 63)")


def standby_link(cluster_conninfo: str, target_dir: Path, application_name: str | None = None) -> StandbyLink:
    """The standby's primary_conninfo from the cluster's: dbname dropped (a physical replication
    connection ignores it), application_name added (so the primary lists the standby under that name),
    and a password replaced by passfile=DIR.pgpass."""
    params = parse_conninfo(cluster_conninfo)
    params.pop("dbname", None)
    password = params.pop("password", None)
    if application_name:
        params["application_name"] = application_name
    if password is None:
        return StandbyLink(make_conninfo(params), None)
    if "\n" in password or "\r" in password:
        raise UsageError("the cluster's password contains a line break, which a passfile cannot hold")
    passfile = Path(os.path.abspath(target_dir) + PASSFILE_SUFFIX)
    if passfile.is_symlink() or (passfile.exists() and not passfile.is_file()):
        raise UsageError(f"{passfile} exists and is not a regular file; nothing was changed")
    params["passfile"] = str(passfile)
    # this file serves this one connection, so host, port and database may be wildcards ("replication"
    # is the database a physical replication connection is matched against)
    user = _pgpass_field(params.get("user", "*"))
    return StandbyLink(make_conninfo(params), passfile, f"*:*:*:{user}:{_pgpass_field(password)}\n")


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def write_passfile(link: StandbyLink, os_user: str | None) -> Path | None:
    """Write the passfile (0600, owned by os_user when run as root) atomically; never follows a symlink."""
    if link.passfile is None:
        return None
    path = link.passfile
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            if os_user is not None and os.geteuid() == 0:
                entry = _user(os_user)
                os.fchown(f.fileno(), entry.pw_uid, entry.pw_gid)
            f.write(link._passfile_text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def remove_passfile(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _user(os_user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(os_user)
    except KeyError:
        raise UsageError(f"os_user {os_user!r} does not exist on this machine") from None


# --- replication slot on the primary ------------------------------------------------------------------


def slot_state(conn: PgConnection, slot: str) -> dict[str, object] | None:
    return conn.fetchone("SELECT slot_type, active, wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,))


def check_slot_usable(conn: PgConnection, slot: str) -> bool:
    """True when the slot already exists and a new standby can use it; False when it does not exist.
    UsageError for a slot that is logical, in use by another standby, or has lost WAL."""
    row = slot_state(conn, slot)
    if row is None:
        return False
    if row["slot_type"] != "physical":
        raise UsageError(f"replication slot {slot!r} on the primary is a {row['slot_type']} slot, not physical")
    if row["active"]:
        raise UsageError(
            f"replication slot {slot!r} on the primary is in use by another standby",
            hint="choose another --slot name; nothing was changed",
        )
    if row.get("wal_status") == "lost":
        raise UsageError(
            f"replication slot {slot!r} on the primary has lost the WAL it was holding",
            hint=f"drop it (SELECT pg_drop_replication_slot('{slot}')) or choose another --slot name",
        )
    return True


def create_slot(conn: PgConnection, slot: str) -> None:
    """A physical slot that reserves WAL at once, so the primary keeps everything from now on while the
    standby is restored and catches up from the archive."""
    conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))


def drop_slot(conn: PgConnection, slot: str) -> None:
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
