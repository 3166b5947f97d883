"""Experiment tooling above training: hyper-parameter sweeps (sweep_*.py) and the analysis of
finished runs (collect, tables, ablation, workbook, result_plots, analysis_cli)."""
