#!/usr/bin/env bash
# The test command: installs everything the suite needs on a fresh machine, runs the project's guards
# (ruff, import-linter layers and library contracts, mypy, module size) and the whole test suite with
# coverage floors.
set -euo pipefail
cd "$(dirname "$0")/.."
OPSDB_DEV=1 ./scripts/bootstrap.sh

# shellcheck source=scripts/apt.sh
. ./scripts/apt.sh  # apt_get waits (bounded) for another apt/dpkg's lock; installs leave no service enabled
can_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }

# --- pgbouncer: a real pgbouncer for the PgBouncer tests (Debian package) ---------------------------
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if can_apt; then
    apt_install_quiet pgbouncer
  else
    echo "warning: pgbouncer is not installed and cannot be installed (not root): its tests will fail" >&2
  fi
fi
# the package's own service must not run on a test machine: the tests start theirs on free ports
if [ "$(id -u)" = "0" ]; then service_off pgbouncer; fi

# --- cron, zsh, chromium, tmux, systemd-analyze: the operator tests (a real cron daemon runs `schedule
# crontab` lines, zsh completion, the drill report rendered in headless Chromium, progress bars in a
# real terminal, `schedule systemd` units verified) ----------------------------------------------------
missing=()
command -v cron >/dev/null 2>&1 || missing+=(cron)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ "${#missing[@]}" -gt 0 ]; then
  if can_apt; then
    apt_install_quiet "${missing[@]}"
  else
    echo "warning: ${missing[*]} not installed and cannot be installed (not root): those tests will fail" >&2
  fi
fi

.venv/bin/ruff check opsdb tests bench scripts
.venv/bin/ruff format --check opsdb tests bench scripts
.venv/bin/lint-imports
.venv/bin/mypy
# OPSDB_TEST_GATE=1: a test whose tool, user or privilege is missing fails instead of skipping (tests/gate.py).
# Coverage of the code the test processes run (not their subprocesses); on a whole-suite run (no
# arguments) each package must stay at or above its floor in scripts/coverage_floors.json.
rm -f .coverage .coverage.*
OPSDB_TEST_GATE=1 .venv/bin/pytest -n "${OPSDB_TEST_WORKERS:-2}" --dist loadfile --cov --cov-report= "$@"
if [ "$#" -eq 0 ]; then
  .venv/bin/python scripts/coverage_floors.py
fi
