"""The commands behind analyze_results.py (everything) and analyze_cross_corpus.py (domain
adaptation only), and the Markdown documents they write.

Runs are collected by collect.py, tabulated by tables.py and ablation.py, written to Excel by
workbook.py and plotted by result_plots.py.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from src.utils import io
from src.utils.plots import plot_per_class_recall

from .ablation import ablation_tables
from .collect import (NoRuns, collect_runs, drop_empty_recall, filter_runs, short_setting,
                      sort_by_uar)
from .result_plots import plot_method_bars, write_plots
from .tables import (da_table, efficiency_table, method_summary, overall_table, pct,
                     per_class_table, recall_before_after, to_markdown)
from .workbook import write_summary_workbook

REPO_ROOT = Path(__file__).resolve().parents[2]


def build_parser(prog: str, description: str, cross: bool = False) -> argparse.ArgumentParser:
    """The shared command line of both commands; `cross` adds --aggregate, otherwise --kind and
    --top."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--results_root", default=str(REPO_ROOT / "results"))
    p.add_argument("--data", default=None, help="source corpus (e.g. EMODB)")
    p.add_argument("--feature_type", default=None)
    p.add_argument("--since", default=None, help="runs finished on or after this date "
                                                 "(2026-11-01 or 2026-11-01T12:00)")
    p.add_argument("--out", default=None, help="output folder (default <results_root>/analysis)")
    if cross:
        p.add_argument("--aggregate", choices=("best-config", "all"), default="best-config",
                       help="per method: runs of its best configuration (default) or all runs")
    else:
        p.add_argument("--kind", default=None,
                       help="comma list of kinds to keep: train,test,train-lmmd,cross-test")
        p.add_argument("--top", type=int, default=5, help="runs in the per-class recall plot")
    return p


def _filter_text(args) -> str:
    """The filters given on the command line, as flags ("" when none)."""
    parts = [f"--{k} {getattr(args, k)}" for k in ("data", "feature_type", "since", "kind")
             if getattr(args, k, None)]
    return " ".join(parts)


def _select(args, kinds=None) -> pd.DataFrame:
    """The runs matching the command line, best UAR first; NoRuns when none does."""
    frame = collect_runs(args.results_root, warn=lambda m: print(m, file=sys.stderr))
    frame = filter_runs(frame, args.data, args.feature_type, args.since, kinds)
    if frame.empty:
        raise NoRuns()
    return sort_by_uar(drop_empty_recall(frame))


def _no_runs(args, what: str, hint: str) -> int:
    """Say on stderr that no run matched (and what to do); exit code 1."""
    filters = _filter_text(args)
    print(f"{args.results_root} holds no {what}"
          f"{' matching ' + filters if filters else ''}; {hint}", file=sys.stderr)
    return 1


def main_results(argv: Sequence[str] | None = None) -> int:
    """analyze_results.py: summary.csv/.xlsx, plots and tables.md of the matching runs."""
    args = build_parser("analyze_results.py",
                        "Collect every results/<run>/metrics.json into one table, an Excel "
                        "summary, plots and Markdown tables.").parse_args(argv)
    kinds = [k.strip() for k in args.kind.split(",") if k.strip()] if args.kind else None
    try:
        frame = _select(args, kinds)
    except NoRuns:
        return _no_runs(args, "finished runs", "run training first")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.results_root) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    io.write_csv(out / "summary.csv", frame)
    write_summary_workbook(out / "summary.xlsx", frame)
    plots = write_plots(frame, out / "plots", args.top,
                        warn=lambda m: print(m, file=sys.stderr))
    markdown = tables_markdown(frame, _filter_text(args), args.data, args.feature_type)
    io.write_text(out / "tables.md", markdown)
    best = frame.iloc[0]
    print(f"{len(frame)} runs; best UAR {pct(best['uar_mean'])}% ({best['run_id']}, "
          f"{best['kind']}, {best['setting']} {best['feature_type']})")
    print(to_markdown(overall_table(frame)))
    print(f"wrote {out / 'summary.xlsx'}, {out / 'summary.csv'}, {out / 'tables.md'} and "
          f"{len(plots)} plots in {out / 'plots'}")
    return 0


def tables_markdown(frame: pd.DataFrame, filters: str, corpus: str | None = None,
                    feature: str | None = None) -> str:
    """tables.md: overall, per-class, domain-adaptation, efficiency and ablation tables."""
    corpus, features, components = ablation_tables(frame, corpus, feature)
    sections = [
        "# Results tables",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} from {len(frame)} "
        f"runs ({filters or 'no filters'}). Percentages; mean ± std over folds unless noted. "
        "\"Best\" = highest mean UAR; E->R = trained on EMODB, evaluated on RAVDESS.",
        "## Overall comparison (best run of each setting)",
        to_markdown(overall_table(frame)),
        "## Per-class recall (%) of the best run of each setting",
        to_markdown(per_class_table(frame)),
        "## Domain adaptation effectiveness (train-lmmd runs)",
        "Best configuration of each method; mean ± std over its seeds (or over folds for a "
        "single run). Precision and recall are macro averages.",
        to_markdown(da_table(method_summary(frame))),
        "## Computational efficiency (best run of each setting and feature)",
        to_markdown(efficiency_table(frame)),
        f"## Ablation: features ({corpus}, full model: TCN + DTPM + attention)",
        to_markdown(features),
        f"## Ablation: components ({corpus}, {feature or 'MFCC'})",
        to_markdown(components),
    ]
    return "\n\n".join(sections) + "\n"


def cross_corpus_markdown(summary: pd.DataFrame, filters: str, aggregate: str) -> str:
    """cross_corpus.md: the methods per direction and per-class recall before/after LMMD."""
    how = ("best configuration of each method, mean ± std over its seeds (over folds for a "
           "single run)" if aggregate == "best-config" else
           "mean ± std over all runs of each method (over folds for a single run)")
    sections = ["# Cross-corpus adaptation",
                f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} "
                f"({filters or 'no filters'}); train-lmmd runs, figures on the target corpus, "
                f"{how}. Percentages.",
                "## Methods per direction", to_markdown(da_table(summary))]
    for setting in sorted(set(summary["setting"])):
        table = recall_before_after(summary, setting)
        if table is None:
            continue
        sections += [f"## Per-class recall (%) {short_setting(setting)}: before (none) and "
                     f"after (lmmd) adaptation",
                     to_markdown(table.map(pct).rename_axis("class").reset_index())]
    return "\n\n".join(sections) + "\n"


def main_cross_corpus(argv: Sequence[str] | None = None) -> int:
    """analyze_cross_corpus.py: cross_corpus.csv/.md and plots of the train-lmmd runs."""
    args = build_parser("analyze_cross_corpus.py",
                        "Compare domain-adaptation methods (none/mmd/dann/lmmd) per direction "
                        "over the train-lmmd runs.", cross=True).parse_args(argv)
    try:
        frame = _select(args, kinds=("train-lmmd",))
    except NoRuns:
        return _no_runs(args, "finished train-lmmd runs",
                        "run `python -m src.training.main --mode train-lmmd` first")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.results_root) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    summary = method_summary(frame, args.aggregate)
    io.write_csv(out / "cross_corpus.csv", summary)
    plots = [plot_method_bars(summary, out / "plots" / "cross_corpus_methods.png")]
    for setting in sorted(set(summary["setting"])):
        table = recall_before_after(summary, setting)
        if table is not None:
            name = setting.replace("->", "-to-")
            plots.append(plot_per_class_recall(
                table, out / "plots" / f"cross_corpus_recall_{name}.png",
                title=f"{short_setting(setting)}: per-class recall before (none) / after "
                      f"(lmmd)"))
    markdown = cross_corpus_markdown(summary, _filter_text(args), args.aggregate)
    io.write_text(out / "cross_corpus.md", markdown)
    print(f"{len(frame)} train-lmmd runs")
    print(to_markdown(da_table(summary)))
    print(f"wrote {out / 'cross_corpus.csv'}, {out / 'cross_corpus.md'} and {len(plots)} plots "
          f"in {out / 'plots'}")
    return 0
