#!/usr/bin/env bash
# Sets up (if needed), builds the demo catalogue (Fashion-MNIST product photos), indexes it,
# and serves the shop site on 127.0.0.1, printing the URL and the demo login.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m jiansuo.demo "$@"
