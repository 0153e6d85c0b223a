#!/usr/bin/env bash
# The test command: installs everything the suite needs on a fresh machine, runs the project's guards
# (ruff, import-linter layers and library contracts, module size) and the whole test suite.
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
    echo "warning: pgbouncer is not installed and cannot be installed (not root): its tests will be skipped" >&2
  fi
fi
# the package's own service must not run on a test machine: the tests start theirs on free ports
if [ "$(id -u)" = "0" ]; then service_off pgbouncer; fi

# --- cron, zsh, chromium, tmux: the operator tests (a real cron daemon runs `schedule crontab` lines,
# zsh completion, the drill report rendered in headless Chromium, progress bars read back from tmux) -
missing=()
command -v cron >/dev/null 2>&1 || missing+=(cron)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ "${#missing[@]}" -gt 0 ]; then
  if can_apt; then
    apt_install_quiet "${missing[@]}"
  else
    echo "warning: ${missing[*]} not installed and cannot be installed (not root): those tests will be skipped" >&2
  fi
fi

.venv/bin/ruff check opsdb tests bench scripts
.venv/bin/ruff format --check opsdb tests bench scripts
.venv/bin/lint-imports
OPSDB_TEST_GATE=1 .venv/bin/pytest -n "${OPSDB_TEST_WORKERS:-2}" --dist loadfile "$@"
