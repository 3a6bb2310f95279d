#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and prints its path on the last line.
# The environment is keyed on the dependency pins, so clones with the same pins share one.
# A half-built environment is never reused: it counts only once its .complete marker is written.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${PYTHON:-python3}"
key="$("$python_bin" - "$root" <<'PY'
import hashlib, sys, tomllib, pathlib
root = pathlib.Path(sys.argv[1])
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
pins = project["dependencies"] + project["optional-dependencies"]["dev"]
extra = (root / "scripts" / "extra-requirements.txt").read_text()
text = "\n".join(sorted(pins)) + "\n" + extra + sys.version.split()[0]
print(hashlib.sha256(text.encode()).hexdigest()[:16])
PY
)"
cache="${UNIFIED_ANOMALY_ENV_ROOT:-$HOME/.cache/unified-anomaly}"
venv="$cache/venv-$key"
# pip warns once per package about this machine's local index folders; those lines say nothing useful.
pip_quietly() {
    "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; } >&2
    return "${PIPESTATUS[0]}"
}
mkdir -p "$cache"
exec 9>"$cache/.lock-$key"
flock 9
if [ ! -f "$venv/.complete" ]; then
    # A missing marker means a build that never finished: start it again from nothing.
    rm -rf "$venv"
    echo "[setup] building environment $venv (first run: a few minutes, ~6.5 GB)" >&2
    "$python_bin" -m venv "$venv"
    pip_quietly "$venv/bin/python" -m pip install -q --upgrade pip
    # Dependencies only: the project itself runs from src/ (kedro and pytest put it on the path).
    "$python_bin" - "$root" > "$venv/requirements.txt" <<'PY'
import sys, tomllib, pathlib
project = tomllib.loads((pathlib.Path(sys.argv[1]) / "pyproject.toml").read_text())["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PY
    pip_quietly "$venv/bin/python" -m pip install -q -r "$venv/requirements.txt"
    # Wheels whose declared requirements cannot install here (see scripts/extra-requirements.txt).
    pip_quietly "$venv/bin/python" -m pip install -q --no-deps -r "$root/scripts/extra-requirements.txt"
    touch "$venv/.complete"
fi
echo "$venv"
