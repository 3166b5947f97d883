"""Write a CSV manifest (path,label,speaker) of a corpus the tool already knows, e.g. to try the
CSV-manifest path on data you have:

    python scripts/write_manifest.py EMODB data/raw/emodb_manifest.csv

Paths are written absolute, so the manifest can live anywhere (under data/raw/, which git
ignores, or your own folder)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data_processing.corpora import load_corpus  # noqa: E402
from src.utils.io import write_csv  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/write_manifest.py EMODB|RAVDESS OUT.csv", file=sys.stderr)
        return 2
    corpus = load_corpus(argv[0])
    table = corpus[["path", "label", "speaker"]].copy()
    table["path"] = [str(Path(p).resolve()) for p in table["path"]]
    Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
    write_csv(argv[1], table)
    print(f"{argv[1]}: {len(table)} files of {argv[0].upper()}, "
          f"{table['label'].nunique()} labels, {table['speaker'].nunique()} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
