"""Compare domain-adaptation methods (none/mmd/dann/lmmd) per direction over the train-lmmd runs
(logic: src/experiments/analysis_cli.py).

    python analyze_cross_corpus.py [--results_root results] [--data EMODB] [--feature_type MFCC]
        [--since 2026-11-01] [--aggregate best-config|all] [--out results/analysis]

Writes <out>/cross_corpus.csv, cross_corpus.md and plots/cross_corpus_*.png; exits 1 when no
train-lmmd run matches.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from src.experiments.analysis_cli import main_cross_corpus  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_cross_corpus())
