#!/usr/bin/env bash
echo "tune-hyperparameter.sh: not implemented yet (see the experiment-tooling issue)" >&2
exit 1
