"""Compare cross-corpus runs (filled in by the experiment-tooling issue)."""
import sys

if __name__ == "__main__":
    print("analyze_cross_corpus.py: not implemented yet (see the experiment-tooling issue); each "
          "run's report is in results/<run-id>/report.xlsx and metrics.json", file=sys.stderr)
    sys.exit(1)
