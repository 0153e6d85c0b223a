"""One privilege model: root and the cluster's os_user take turns on the same repository, spool and keys.

The rule (docs/postgres.md, "One privilege model"): for a configured cluster, everything the cluster's
own processes also touch (a file:// repository, the WAL spool, the WAL helpers' sockets and state,
restored data directories, key files meant for archiving) belongs to the cluster's `os_user`, whoever
runs opsdb. When opsdb runs as root it creates such files and directories as root and hands each one to
`os_user` (uid and primary group) as it creates it; it never uses the WAL helpers or the spool (those
calls are served in-process), and it never re-owns what already exists: `check` reports that instead.
Root can read and write everything the server's user owns, so both keep working.

`handover(settings, cluster)` is the account files go to, or None when there is nothing to hand over
(not root, no such user on this host, or the user is root itself).
"""

from __future__ import annotations

import dataclasses
import os
import pwd
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opsdb.config import Settings


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def owner(self) -> tuple[int, int]:
        return (self.uid, self.gid)


def account(name: str | None) -> Account | None:
    """The local account called name; None when there is no such user on this host."""
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def server_user(settings: Settings, cluster: str | None = None) -> str | None:
    """The os_user of `cluster`; without one, the os_user every configured cluster shares (a repository
    is shared by all clusters). None when no cluster is configured or their os_users differ."""
    clusters = getattr(settings, "clusters", None) or {}
    if cluster is not None and cluster in clusters:
        return str(clusters[cluster].os_user)
    users = {str(c.os_user) for c in clusters.values()}
    return users.pop() if len(users) == 1 else None


def handover(settings: Settings, cluster: str | None = None) -> Account | None:
    """The account new shared files go to when opsdb runs as root; None when nothing is to be handed over."""
    return handover_to(server_user(settings, cluster)) if os.geteuid() == 0 else None


def handover_to(user: str | None) -> Account | None:
    """handover() for a known os_user (server_user's answer)."""
    if os.geteuid() != 0:
        return None
    found = account(user)
    return found if found is not None and found.uid != 0 else None


def current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
