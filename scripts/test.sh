#!/usr/bin/env bash
# Builds (or reuses) the environment, lints, and runs the whole test suite. "No tests ran" is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
venv="$(bash scripts/setup_env.sh | tail -n 1)"
"$venv/bin/ruff" check src tests benchmarks notebooks
set +e
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose (a suite that runs nothing proves nothing)" >&2
    exit 1
fi
exit "$status"
