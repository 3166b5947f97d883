"""Hyper-parameter sweeps over `python -m src.training.main` (driven by tune-hyperparameter.sh).

    python -m src.experiments.sweep_cli [SWEEP_FILE] [--samples N] [--seed S] [-j N] [--dry-run]
                                        [--results_root DIR] [-- extra flags for every run]

The sweep file syntax is described in sweep_spec.py, how grid points become configurations in
sweep_grid.py, and how they are run and resumed in sweep_runner.py.

`SER_SWEEP_PYTHON_MODULE` (or `--runner`) replaces the entry point, for tests.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from src.training.config import RunConfig

from .sweep_grid import DEFAULT_MODULE, expand, sample
from .sweep_runner import SweepRunner, cpu_count
from .sweep_spec import SweepError, parse_sweep_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SWEEP = REPO_ROOT / "sweeps" / "default.sh"


def build_parser() -> argparse.ArgumentParser:
    """The command line of tune-hyperparameter.sh (flags after `--` are split off by main)."""
    p = argparse.ArgumentParser(
        prog="tune-hyperparameter.sh",
        description="Run a grid (or a seeded random sample of it) of training configurations; "
                    "resumable, failures logged, N at a time. Flags after -- go to every run.")
    p.add_argument("sweep_file", nargs="?", default=None,
                   help="sweep file, bash syntax (.sh) or YAML (.yaml) (default "
                        "sweeps/default.sh)")
    p.add_argument("--samples", type=int, default=None,
                   help="run a random sample of N configurations (seeded by --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --samples (default 0)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="configurations run at once")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands of the unfinished configurations, one per line")
    p.add_argument("--results_root", default=None,
                   help="results folder of the runs (default results/ of the repository)")
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow threads per run (default max(1, cores // j))")
    p.add_argument("--runner", default=os.environ.get("SER_SWEEP_PYTHON_MODULE", DEFAULT_MODULE),
                   help=argparse.SUPPRESS)
    return p


def resolve_sweep_file(name: str | None) -> Path:
    """A sweep file given as a path, relative to the repository, or by name under sweeps/
    (with or without `.sh`, then `.yaml`, `.yml`); sweeps/default.sh when None."""
    if name is None:
        return DEFAULT_SWEEP
    path = Path(name)
    if path.exists() or path.is_absolute():
        return path
    for candidate in (REPO_ROOT / path, REPO_ROOT / "sweeps" / path,
                      *(REPO_ROOT / "sweeps" / f"{path}{suffix}"
                        for suffix in (".sh", ".yaml", ".yml"))):
        if candidate.exists():
            return candidate
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or with --dry-run print) a sweep; the exit code (2 for a bad sweep or options)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        print("error: -j must be at least 1", file=sys.stderr)
        return 2
    try:
        spec = parse_sweep_file(resolve_sweep_file(args.sweep_file))
        configs, grid_size = expand(spec, extra)
        chosen = sample(configs, args.samples, args.seed)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.results_root:
        results_root = Path(args.results_root).resolve()
    else:
        results_root = Path(RunConfig().results_root)
    threads = args.threads or max(1, cpu_count() // args.jobs)
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    runner = SweepRunner(spec, chosen, results_root, args.jobs, sys.executable, args.runner,
                         threads, env)
    if args.dry_run:
        left = [c for c in chosen if not runner.metrics_path(c).exists()]
        print(f"# sweep {spec.name}: grid {grid_size}, {len(configs)} distinct, "
              f"{len(chosen)} chosen, {len(chosen) - len(left)} already finished",
              file=sys.stderr)
        for config in left:
            print(shlex.join(runner.command(config)))
        return 0
    try:
        return runner.run()
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
