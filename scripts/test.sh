#!/usr/bin/env bash
# The test command: installs everything the suite needs on a fresh machine, runs the project's guards
# (ruff, import-linter layers and library contracts, module size) and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
OPSDB_DEV=1 ./scripts/bootstrap.sh

# a real pgbouncer for the PgBouncer tests (Debian package); needs root for apt-get
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    # the package enables a system pgbouncer on 6432; the tests start their own
    (systemctl stop pgbouncer || service pgbouncer stop) >/dev/null 2>&1 || true
  else
    echo "warning: pgbouncer is not installed and cannot be installed (not root): its tests will be skipped" >&2
  fi
fi

.venv/bin/ruff check opsdb tests bench scripts
.venv/bin/ruff format --check opsdb tests bench scripts
.venv/bin/lint-imports
.venv/bin/pytest -n "${OPSDB_TEST_WORKERS:-2}" --dist loadfile "$@"
