#!/usr/bin/env bash
# Quick start: install opsdb into .venv and run the tour on the embedded default
# (a throwaway PostgreSQL cluster, a local file:// repository and a fresh key under a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/opsdb demo "$@"
