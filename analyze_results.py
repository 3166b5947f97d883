"""Collect every results/<run-id>/metrics.json into one table, an Excel summary, plots and the
Markdown tables (logic: src/experiments/analysis_cli.py).

    python analyze_results.py [--results_root results] [--data EMODB] [--feature_type MFCC]
        [--since 2026-11-01] [--kind train,train-lmmd] [--top 5] [--out results/analysis]

Writes <out>/summary.xlsx, summary.csv, tables.md and plots/*.png; exits 1 when no run matches.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from src.experiments.analysis_cli import main_results  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_results())
