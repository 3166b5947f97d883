"""Benchmarks: scripts that measure speed and accuracy against a real peer or baseline, print
their figures and write them to files beside themselves."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, text: str, output: str | Path, markdown: str | Path) -> None:
    """Print the Markdown `text`, write `report` as JSON to `output` and `text` to `markdown`."""
    print(text)
    Path(output).write_text(json.dumps(report, indent=1))
    Path(markdown).write_text(text)
    print(f"wrote {output} and {markdown}")
