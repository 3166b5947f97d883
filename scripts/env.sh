# Source me (the run_*.sh scripts do): creates .venv when missing, installs the requirements when
# they changed, points SER_DATA_ROOT at ../shared/data when that folder exists and nothing else
# was set, and sets $PY to .venv's python. Safe to source from an interactive shell (no `set -e`).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || return 1
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON_BIN --version)"
    "$PYTHON_BIN" -m venv .venv || { echo "error: could not create .venv" >&2; return 1; }
fi
want="$(cat requirements.txt requirements-dev.txt | sha1sum | cut -d' ' -f1)"
if [ "$(cat .venv/.requirements.sha 2>/dev/null || true)" != "$want" ]; then
    echo "[setup] installing requirements into .venv (first run takes a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip &&
        .venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt ||
        { echo "error: pip install failed (see above)" >&2; return 1; }
    echo "$want" > .venv/.requirements.sha
fi
if [ -z "${SER_DATA_ROOT:-}" ] && [ -d "$REPO_ROOT/../shared/data" ]; then
    SER_DATA_ROOT="$(cd "$REPO_ROOT/../shared/data" && pwd)"
    export SER_DATA_ROOT
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
PY="$REPO_ROOT/.venv/bin/python"
