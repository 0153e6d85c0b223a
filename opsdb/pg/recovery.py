"""Recovery settings in a data directory: the one place opsdb writes them.

A restored data directory recovers as its postgresql.auto.conf (restore_command, recovery_target*,
primary_conninfo ...) and its signal file say: recovery.signal (archive recovery, to a target or to
the end, then promotion) or standby.signal (a standby). `opsdb restore` (with or without a
point-in-time target), a drill's scratch copy and a new standby all write them through
`write_recovery`, so its rules hold for every one of them:
- every recovery-target line the directory carried goes first: a backup of a server that was itself
  restored to a target carries one, and PostgreSQL refuses two targets (even an empty one);
- each name is set once (pg/autoconf.py removes earlier lines rather than overriding them);
- exactly the one signal file asked for is left, or none;
- the files are private (0600) and, when opsdb runs as root, belong to os_user.
It takes primitives (a path, settings, a user name), never the configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from opsdb.pg.autoconf import set_settings, user_ids

RECOVERY_SIGNAL = "recovery.signal"
STANDBY_SIGNAL = "standby.signal"
SIGNAL_FILES = (RECOVERY_SIGNAL, STANDBY_SIGNAL)
# PostgreSQL accepts at most one of these
TARGET_SETTINGS = (
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
)
# and these shape whichever target is set: one carried over would apply to ours
TARGET_OPTIONS = ("recovery_target_inclusive", "recovery_target_action")


def write_recovery(
    data_dir: Path, settings: Mapping[str, object], signal: str | None, *, os_user: str | None = None
) -> None:
    """Recover data_dir as `settings` and `signal` (RECOVERY_SIGNAL, STANDBY_SIGNAL or None: crash
    recovery only) say; every target setting it carried and its other signal file are removed."""
    if signal is not None and signal not in SIGNAL_FILES:
        raise ValueError(f"not a signal file: {signal!r}")
    data_dir = Path(data_dir)
    set_settings(data_dir, settings, drop=(*TARGET_SETTINGS, *TARGET_OPTIONS), os_user=os_user)
    for name in SIGNAL_FILES:
        if name != signal:
            (data_dir / name).unlink(missing_ok=True)
    if signal is not None:
        path = data_dir / signal
        path.write_bytes(b"")
        os.chmod(path, 0o600)
        if os_user is not None and os.geteuid() == 0:
            os.chown(path, *user_ids(os_user))
