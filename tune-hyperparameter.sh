#!/usr/bin/env bash
# Hyper-parameter sweeps over `python -m src.training.main` (logic: src/experiments/sweep_cli.py).
#
#   bash tune-hyperparameter.sh [SWEEP_FILE (default sweeps/default.sh)] [--samples N] [--seed S]
#        [-j N] [--dry-run] [--results_root DIR] [--threads T] [-- extra flags for every run]
#
#   bash tune-hyperparameter.sh sweeps/quick.sh -j 2                 # ~10 min on 2 cores
#   bash tune-hyperparameter.sh sweeps/quick.yaml -j 2               # the same sweep, as YAML
#   bash tune-hyperparameter.sh sweeps/default.sh --samples 20 -j 2  # seeded random sample
#   bash tune-hyperparameter.sh sweeps/quick.sh --dry-run | parallel -j 4   # or a Slurm array
#
# Each configuration runs as results/sweep-<hash>/ (hash = sha1 of its sorted flags); finished
# ones are skipped on re-run, failures are listed in results/sweeps/<name>/failed.txt and
# results/sweeps/<name>/sweep.json holds hash -> flags -> status. Ctrl-C stops the running
# trainings cleanly (finished folds are kept). Set PY to use another interpreter.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PY:-$REPO_ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "error: $PY not found; run 'source scripts/env.sh' once to create .venv (or set PY)" >&2
    exit 2
fi
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$PY" -m src.experiments.sweep_cli "$@"
