#!/usr/bin/env bash
# The whole suite. Starts its own throwaway Redis (tests/redis_server.py) unless
# TEST_REDIS_URL is set; uses PostgreSQL when DATABASE_URL is set, else SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_BROWSER=1 scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -n "${DATABASE_URL:-}" ]; then echo "test: database ${DATABASE_URL%%@*}@..."; else echo "test: database SQLite"; fi
exec .venv/bin/python -m pytest "$@"
