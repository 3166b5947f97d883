"""Reading a CSV corpus manifest `path,label[,speaker][,gender]` into corpus rows.

The manifest is UTF-8 (a byte-order mark is fine) or UTF-16 with a byte-order mark; labels are
mapped to canonical names through `LABEL_SYNONYMS`; rows with an empty path or label, or that
repeat an earlier row, are skipped; rows that collide with an earlier one (another file with
the same file_id, the same file with another label) are reported as failures; a broken file
(bad encoding, NUL characters, too many fields, a duplicated column) is a CorpusError naming
its line. corpora.scan_corpus turns the rows into the corpus table.
"""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path, PurePosixPath

from .corpus_error import CorpusError

# Lower-cased label synonyms accepted in CSV manifests.
LABEL_SYNONYMS = {
    "angry": "angry", "anger": "angry", "ang": "angry", "mad": "angry",
    "boredom": "boredom", "bored": "boredom", "bore": "boredom",
    "calm": "calm",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fea": "fear",
    "happy": "happy", "happiness": "happy", "hap": "happy", "joy": "happy",
    "neutral": "neutral", "neu": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise",
}


def canonical_label(label: str) -> str:
    """Lower-case `label` and map a known synonym to its canonical name (else keep it)."""
    text = str(label).strip().lower()
    return LABEL_SYNONYMS.get(text, text)


def _manifest_duplicates(rows: list[dict], lines: list[int], skipped: list[tuple[str, str]]
                         ) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Keep the first manifest row of each file_id. A later row that repeats a row exactly is
    skipped (warned); one that gives the same file another label, or another file that maps to
    the same file_id (`a/b.wav` and `a__b.wav`, `x.wav` and `x.flac`), is also returned as a
    failure (file_id, path, reason) for failures.csv."""
    first: dict[str, tuple[dict, int]] = {}
    unique, failures = [], []
    for row, line in zip(rows, lines):
        if row["file_id"] not in first:
            first[row["file_id"]] = (row, line)
            unique.append(row)
            continue
        kept, kept_line = first[row["file_id"]]
        if row["path"] != kept["path"]:
            reason = (f"manifest line {line}: file_id {row['file_id']} collides with "
                      f"{kept['path']} (line {kept_line}); rename one of the files")
        elif row["label"] != kept["label"]:
            reason = (f"manifest line {line}: duplicate row with label {row['label']} "
                      f"(line {kept_line} says {kept['label']}, which is kept)")
        else:
            skipped.append((row["path"], f"manifest line {line}: repeats line {kept_line}"))
            continue
        skipped.append((row["path"], reason))
        failures.append((row["file_id"], row["path"], reason))
    return unique, failures


def _manifest_file_id(written: str) -> str:
    """file_id for a manifest path: the path as written, no extension, '/' replaced by '__';
    "" for a path that names no file ("." , "/", "dir/..")."""
    posix = PurePosixPath(written.replace("\\", "/"))
    if posix.name in ("", ".."):
        return ""
    parts = [p for p in posix.with_suffix("").parts if p not in ("/", ".", "")]
    return "__".join(parts)


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decode_manifest(manifest: Path, data: bytes) -> str:
    """The manifest's text: UTF-8 (with or without a byte-order mark) or UTF-16 with one."""
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"cannot read manifest {manifest}: not UTF-16 text after its "
                              f"UTF-16 byte-order mark ({exc.reason})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = len(re.findall(rb"\r\n|\r|\n", data[:exc.start])) + 1
        raise CorpusError(f"manifest {manifest} line {line}: byte 0x{data[exc.start]:02x} is not "
                          f"UTF-8 text; save the manifest as UTF-8") from None


def _read_manifest(manifest: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(lower-cased header, [(line, {column: value})]) of a CSV manifest; `line` is the physical
    line where the row starts (blank lines and quoted line breaks counted). A row with fewer
    fields than the header gets "" for the rest; one with more is an error."""
    try:
        data = manifest.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read manifest {manifest}: {exc.strerror or exc}") from None
    text = _decode_manifest(manifest, data)
    if "\x00" in text:
        line = len(re.findall(r"\r\n|\r|\n", text[:text.index("\x00")])) + 1
        raise CorpusError(f"manifest {manifest} line {line}: contains a NUL character (not a "
                          f"text file, or UTF-16 without a byte-order mark?)")
    source = io.StringIO(text, newline="")
    reader = csv.reader(source, skipinitialspace=True, strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, dict]] = []
    end = 0  # physical line the previous record ended on
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue  # blank line
            if header is None:
                header = [f.strip().lower() for f in fields]
                twice = sorted({c for c in header if c and header.count(c) > 1})
                if twice:
                    raise CorpusError(f"manifest {manifest} has column(s) {', '.join(twice)} "
                                      f"twice (column names ignore case and spaces)")
                continue
            if len(fields) > len(header):
                raise CorpusError(
                    f"manifest {manifest} line {start}: {len(fields)} fields but the header has "
                    f"{len(header)}; quote fields that contain commas")
            fields = fields + [""] * (len(header) - len(fields))
            rows.append((start, dict(zip(header, fields))))
    except csv.Error as exc:
        raise CorpusError(f"cannot read manifest {manifest}: line {end + 1}: {exc}") from None
    if header is None:
        raise CorpusError(f"manifest {manifest} is empty; it needs a header line path,label")
    return header, rows


def _scan_manifest(manifest: str | os.PathLike
                   ) -> tuple[list[dict], list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(rows, skipped (path, reason), failures (file_id, path, reason)) of a CSV manifest."""
    manifest = Path(manifest).expanduser()
    if not manifest.is_file():
        raise CorpusError(f"manifest {manifest} does not exist or is not a file")
    columns, records = _read_manifest(manifest)
    missing = [c for c in ("path", "label") if c not in columns]
    if missing:
        raise CorpusError(f"manifest {manifest} lacks column(s) {', '.join(missing)}; "
                          f"it needs path,label and optionally speaker,gender")
    base = manifest.resolve().parent
    rows, skipped, lines = [], [], []
    for i, record in records:
        written = str(record["path"]).strip()
        label = str(record["label"]).strip()
        if not written or not label:
            skipped.append((written or f"{manifest}:{i}",
                            f"manifest line {i}: empty path or label"))
            continue
        file_id = _manifest_file_id(written)
        if not file_id:
            skipped.append((written, f"manifest line {i}: path {written!r} names no file"))
            continue
        path = Path(written).expanduser()
        if not path.is_absolute():
            path = base / path
        gender = str(record.get("gender", "")).strip().upper()[:1]
        rows.append({
            "file_id": file_id,
            "path": os.path.abspath(path),
            "label": canonical_label(label),
            "speaker": str(record.get("speaker", "")).strip() or "unknown",
            "gender": gender if gender in ("M", "F") else "",
            "dataset": "CSV",
        })
        lines.append(i)
    unique, failures = _manifest_duplicates(rows, lines, skipped)
    return unique, skipped, failures
