#!/usr/bin/env bash
# Create .venv and install opsdb into it (with the dev extra when OPSDB_DEV=1). Idempotent.
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
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if [ "${OPSDB_DEV:-0}" = "1" ]; then
  .venv/bin/python -m pip install --quiet -e '.[dev]'
else
  .venv/bin/python -m pip install --quiet -e .
fi
