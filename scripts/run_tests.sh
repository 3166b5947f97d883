#!/usr/bin/env bash
# Set up .venv (when needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/env.sh"
set +e
"$PY" -m pytest -q "$@" tests
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
