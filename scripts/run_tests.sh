#!/usr/bin/env bash
# Set up .venv (when needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/env.sh"
set +e
# Two worker processes (TEST_WORKERS); each test file runs whole on one worker, so its module
# fixtures are built once. Most of a test's time is single-threaded graph tracing, so the two
# cores of a small CI machine both work.
"$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@" tests
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
