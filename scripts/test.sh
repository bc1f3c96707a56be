#!/usr/bin/env bash
# Sets up (if needed), starts PostgreSQL+pgvector and Redis on 127.0.0.1, and runs the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/test_cli.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh >/dev/null
source var/services.env
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
