#!/usr/bin/env bash
# Builds (or reuses) the environment, then `kedro run` with any arguments given (default: the whole workflow).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
venv="$(bash scripts/setup_env.sh | tail -n 1)"
exec "$venv/bin/kedro" run "$@"
