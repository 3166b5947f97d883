"""The Excel summary of collected runs: a `summary` sheet with every run and one sheet per
setting x feature, UAR descending, the best row highlighted; metric fractions shown as
percentages."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from openpyxl.styles import Font, PatternFill

from src.utils import io

from .collect import drop_empty_recall, sort_by_uar

HIGHLIGHT_FILL = "FFF2CC"


def _sheet_name(text: str, used: set[str]) -> str:
    """A valid, unused (case-insensitively) Excel sheet name for `text`; recorded in `used`."""
    name = "".join("_" if ch in '[]:*?/\\' else ch for ch in text)[:31] or "sheet"
    base, k = name, 2
    while name.lower() in used:
        suffix = f"~{k}"
        name = base[:31 - len(suffix)] + suffix
        k += 1
    used.add(name.lower())
    return name


def write_summary_workbook(path: Path, frame: pd.DataFrame) -> None:
    """`summary` sheet (all runs, UAR descending, best row highlighted) and one sheet per
    setting x feature pair (same layout)."""
    sheets: list[tuple[str, pd.DataFrame]] = [("summary", frame)]
    used = {"summary"}
    for (setting, feature), group in frame.groupby(["setting", "feature_type"], sort=True,
                                                    dropna=False):
        label = f"{setting.replace('->', '-to-')} {feature}"
        sheets.append((_sheet_name(label, used), sort_by_uar(drop_empty_recall(group))))
    fraction_cols = {c for c in frame.columns
                     if c.startswith("recall_") or c.endswith("_mean") or c.endswith("_std")}
    with io.atomic_path(path, suffix=".xlsx") as tmp:
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            for name, table in sheets:
                table.to_excel(writer, sheet_name=name, index=False)
                sheet = writer.sheets[name]
                sheet.freeze_panes = "C2"
                for col, column in enumerate(table.columns, start=1):
                    letter = sheet.cell(row=1, column=col).column_letter
                    sheet.column_dimensions[letter].width = min(
                        40, max(9, len(str(column)) + 2,
                                *(len(str(v)) + 2 for v in table[column].head(50))))
                    if column in fraction_cols:
                        for r in range(2, len(table) + 2):
                            sheet.cell(row=r, column=col).number_format = "0.00%"
                    sheet.cell(row=1, column=col).font = Font(bold=True)
                if len(table) and pd.notna(table["uar_mean"].iloc[0]):
                    fill = PatternFill("solid", fgColor=HIGHLIGHT_FILL)
                    for col in range(1, len(table.columns) + 1):
                        cell = sheet.cell(row=2, column=col)
                        cell.font = Font(bold=True)
                        cell.fill = fill

