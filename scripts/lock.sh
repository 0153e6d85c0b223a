#!/usr/bin/env bash
# Refresh the pinned, hashed requirement locks from pyproject.toml (the one command to run after
# changing a dependency; commit the locks with the change). Target: CPython 3.11 on Linux x86_64.
#   requirements/runtime.lock   what `pip install opsdb` needs (scripts/bootstrap.sh, the Dockerfile)
#   requirements/dev.lock       runtime + the dev and docker extras (scripts/bootstrap.sh with OPSDB_DEV=1, CI)
# Extra arguments pass to `uv pip compile`, e.g. `./scripts/lock.sh --upgrade-package boto3` or `--upgrade`.
# Without them the versions already locked are kept where they still satisfy pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || OPSDB_DEV=1 ./scripts/bootstrap.sh  # uv is pinned in the dev lock
compile() {
  local out=$1; shift
  .venv/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu --no-strip-extras --custom-compile-command ./scripts/lock.sh \
    --output-file "$out" "$@"
}
compile requirements/runtime.lock pyproject.toml requirements/build.in "$@"
compile requirements/dev.lock pyproject.toml requirements/build.in --extra dev "$@"
echo "locked: requirements/runtime.lock requirements/dev.lock"
