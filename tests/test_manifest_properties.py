"""Property: any CSV manifest either loads (every row has a path, a label and its own file_id) or
fails with one CorpusError line that names the manifest (and the line of a faulty row); the
extraction CLI on such a manifest exits 0, 1 or 2 without a traceback."""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import logging
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from src.data_processing.corpora import CorpusError, scan_corpus
from src.data_processing.run_data_processing import main as extract_main
from tests.conftest import write_wav

# Audio written once per module (0.3 s each); manifests name them relative to their folder.
WAVS = ("a.wav", "b.wav", "sub/c.wav", "ünï cødé 文件.wav", "comma, in name.wav")
MISSING = ("missing.wav", "sub/nope.wav", "/no/such/dir/x.wav")
LABELS = ("angry", "Happiness", " sad ", "FEAR", "frustrated", "neutral", "ärger")
# Errors about the whole file; any other CorpusError is about a row and names its line.
WHOLE_FILE = re.compile(r"cannot read manifest|lacks column|no usable|is empty|twice|"
                        r"does not exist")
_counter = itertools.count()


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("manifest_props")
    for i, name in enumerate(WAVS):
        write_wav(root / name, seconds=0.3, freq=200.0 + 150 * i)
    return root


# ------------------------------------------------------------------------------ strategies
paths = st.one_of(st.sampled_from(WAVS), st.sampled_from(WAVS), st.sampled_from(MISSING),
                  st.sampled_from(["", "  ", ".", "/", "..", "sub/", "./a.wav", "sub/../a.wav"]),
                  st.text(max_size=12))
labels = st.one_of(st.sampled_from(LABELS), st.sampled_from(["", "   "]), st.text(max_size=8))
columns = st.lists(st.sampled_from(["path", "label", "speaker", "gender", "Path", " LABEL ",
                                    "extra", "notes", "path "]), max_size=5)
encodings = st.sampled_from(["utf-8"] * 4 + ["utf-8-sig", "utf-16", "utf-16-le", "latin-1",
                                            "cp1252"])


@st.composite
def manifests(draw):
    """(bytes of a manifest, {line: path} of rows without a path or label, which must be
    skipped with their line named, when the manifest is UTF-8)."""
    kind = draw(st.sampled_from(["table"] * 12 + ["empty", "header_only", "random_bytes"]))
    if kind == "empty":
        return b"", {}
    if kind == "random_bytes":
        return draw(st.binary(max_size=60)), {}
    header = draw(st.sampled_from([["path", "label"], ["path", "label", "speaker"],
                                   [" Path", "LABEL ", "gender", "notes"], None]))
    header = header or draw(columns)  # None: random columns, maybe without path or label
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=quoting, lineterminator=newline)
    writer.writerow(header)
    blank_labels = {}
    n_rows = 0 if kind == "header_only" else draw(st.integers(0, 6))
    for _ in range(n_rows):
        if draw(st.integers(0, 9)) == 0:
            out.write(newline)  # a blank line
        values = {"path": draw(paths), "label": draw(labels),
                  "speaker": draw(st.sampled_from(["", "s1", "spk 2"])),
                  "gender": draw(st.sampled_from(["", "m", "Female", "x"]))}
        row = [values.get(c.strip().lower(), draw(st.text(max_size=5))) for c in header]
        shape = draw(st.integers(0, 19))
        if shape == 0:
            row = row[:-1]            # a field short
        elif shape == 1:
            row = row + ["surplus"]   # a field too many
        line = len(re.findall(r"\r\n|\r|\n", out.getvalue())) + 1
        writer.writerow(row)
        if header in (["path", "label"], ["path", "label", "speaker"]) and shape != 1:
            row = row + [""] * (len(header) - len(row))
            if any(f.strip() for f in row) and (not row[0].strip() or not row[1].strip()):
                blank_labels[line] = values["path"]
    text = out.getvalue()
    encoding = draw(encodings)
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 19)) == 0:  # a byte that is not UTF-8 somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xe9", b"\x80\x80", b"\x00"])) + data[at:]
    return data, blank_labels if encoding in ("utf-8", "utf-8-sig") else {}


def write_manifest(folder: Path, data: bytes) -> Path:
    path = folder / f"m{next(_counter)}.csv"
    path.write_bytes(data)
    return path


def check_error(err: Exception, manifest: Path) -> None:
    assert type(err) is CorpusError, f"{type(err).__name__}: {err}"
    message = str(err)
    assert "\n" not in message.strip() and "\r" not in message, repr(message)
    assert manifest.name in message, message
    if not WHOLE_FILE.search(message):
        assert re.search(r"line \d+", message), message


# -------------------------------------------------------------------------------- property
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=manifests())
@example(spec=(b"path,label\n.,angry\na.wav,sad\n", {}))
@example(spec=(b"path,label\na.wav,angry,extra\nb.wav,sad,extra\n", {}))
@example(spec=(b"path,label,speaker\na.wav\nb.wav,sad\n", {2: "a.wav"}))
@example(spec=(b"path,label\n\n\na.wav,\nb.wav,sad\n", {4: "a.wav"}))
@example(spec=(b"path,label\n\"x\ny.wav\",angry\na.wav,\n", {4: "a.wav"}))
@example(spec=(b"\xef\xbb\xbfpath,label\r\na.wav,angry\r\n", {}))
@example(spec=("path,label\nä.wav,angry\n".encode("utf-16"), {}))
@example(spec=(b"path,label\na.wav,angry\nb\xe9.wav,sad\n", {}))
@example(spec=(b"path,label,Path\na.wav,angry,b.wav\n", {}))
@example(spec=(b"path,label\na\x00.wav,angry\n", {}))
@example(spec=(b"path,label\n\"a.wav,angry\n", {}))
def test_any_manifest_loads_or_fails_with_one_line(audio_dir, spec):
    data, blank_labels = spec
    manifest = write_manifest(audio_dir, data)
    try:
        frame, skipped = scan_corpus("CSV", manifest=manifest)
    except Exception as err:  # noqa: BLE001 - the property is about the exception's type
        check_error(err, manifest)
        event("CorpusError")
        return
    event("loaded")
    assert len(frame) > 0
    for row in frame.to_dict("records"):
        assert isinstance(row["path"], str) and row["path"].strip(), row
        assert isinstance(row["label"], str) and row["label"].strip(), row
        assert row["file_id"] and "/" not in row["file_id"], row
        assert Path(row["path"]).is_absolute(), row
    assert frame["file_id"].is_unique
    reasons = " ".join(reason for _, reason in skipped)
    for line in blank_labels:  # a row without a label is skipped and its own line is named
        assert f"manifest line {line}:" in reasons, (line, skipped, data)


# ------------------------------------------------------------------------------------- CLI
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=manifests())
@example(spec=(b"path,label\na.wav,angry\nsub/c.wav,sad\nmissing.wav,sad\n", {}))
@example(spec=(b"path,label\n.,angry\n", {}))
def test_extraction_cli_on_any_manifest_exits_cleanly(audio_dir, spec):
    manifest = write_manifest(audio_dir, spec[0])
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    err, out = io.StringIO(), io.StringIO()
    try:
        with tempfile.TemporaryDirectory() as features, contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(out):
            code = extract_main(["--dataset", "CSV", "--manifest", str(manifest), "--features",
                                 "MFCC", "--workers", "0", "--no_progress", "--features_root",
                                 features])
    finally:
        logging.getLogger().removeHandler(handler)
    stderr = err.getvalue()
    event(f"exit {code}")
    assert code in (0, 1, 2), (code, stderr)
    assert "Traceback" not in stderr, stderr
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]
    if code == 2:
        lines = [line for line in stderr.splitlines() if "error:" in line]
        assert len(lines) == 1 and manifest.name in lines[0], stderr
