"""Corpus readers: EMO-DB / RAVDESS name parsing, raw-folder lookup and CSV manifests."""
from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from src.data_processing import corpora
from src.data_processing.corpora import (CANONICAL_LABELS, CorpusError, load_corpus,
                                         resolve_raw_dir, scan_corpus, shared_labels)
from src.data_processing.manifest import canonical_label

# Facts from /work/shared/data/README.md (not from running the code).
EMODB_COUNTS = {"W": 127, "L": 81, "E": 46, "A": 69, "F": 71, "T": 62, "N": 79}
EMODB_LETTERS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy",
                 "T": "sad", "N": "neutral"}
EMODB_MALE = {"03", "10", "11", "12", "15"}
EMODB_FEMALE = {"08", "09", "13", "14", "16"}
RAVDESS_CODES = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                 "06": "fear", "07": "disgust", "08": "surprise"}
RAVDESS_MISSING = ["Actor_01/03-01-02-01-01-02-01", "Actor_01/03-01-08-01-02-02-01",
                   "Actor_05/03-01-02-01-02-02-05", "Actor_05/03-01-02-02-02-01-05",
                   "Actor_20/03-01-03-01-02-01-20", "Actor_20/03-01-06-01-01-02-20"]


def ravdess_expected():
    """Per-label and per-gender counts: the official 1440 minus the six missing files."""
    labels, genders = Counter(), Counter()
    for actor in range(1, 25):
        for code, label in RAVDESS_CODES.items():
            intensities = 1 if label == "neutral" else 2
            n = intensities * 2 * 2  # statements x repetitions
            labels[label] += n
            genders["M" if actor % 2 else "F"] += n
    for item in RAVDESS_MISSING:
        fields = item.split("/")[1].split("-")
        labels[RAVDESS_CODES[fields[2]]] -= 1
        genders["M" if int(fields[6]) % 2 else "F"] -= 1
    return labels, genders


# ------------------------------------------------------------------------------ real corpora
def test_emodb_real_counts(data_root):
    df = load_corpus("emodb", raw_dir=data_root / "EMODB")
    expected = {EMODB_LETTERS[k]: v for k, v in EMODB_COUNTS.items()}
    assert df["label"].value_counts().to_dict() == expected
    assert len(df) == 535 == sum(EMODB_COUNTS.values())
    assert df["speaker"].nunique() == 10
    assert set(df.loc[df.gender == "M", "speaker"]) == EMODB_MALE
    assert set(df.loc[df.gender == "F", "speaker"]) == EMODB_FEMALE
    assert df["file_id"].is_unique and list(df["file_id"]) == sorted(df["file_id"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    assert set(df["dataset"]) == {"EMODB"}
    # the label comes from the 6th character of the name
    row = df.set_index("file_id").loc["03a01Fa"]
    assert (row.label, row.speaker, row.gender) == ("happy", "03", "M")


def test_ravdess_real_counts(data_root):
    df = load_corpus("RAVDESS", raw_dir=data_root / "RAVDESS")
    labels, genders = ravdess_expected()
    assert len(df) == 1440 - len(RAVDESS_MISSING) == 1434
    assert df["label"].value_counts().to_dict() == dict(labels)
    assert df["label"].value_counts()["neutral"] == 96
    assert df["speaker"].nunique() == 24 and df["label"].nunique() == 8
    assert df["gender"].value_counts().to_dict() == dict(genders)
    assert set(df.loc[df.label == "neutral", "intensity"]) == {"normal"}
    assert {"intensity", "statement", "repetition"} <= set(df.columns)
    missing_ids = {m.split("/")[1] for m in RAVDESS_MISSING}
    assert not missing_ids & set(df["file_id"])
    row = df.set_index("file_id").loc["03-01-05-02-01-01-12"]
    assert (row.label, row.speaker, row.gender, row.intensity) == ("angry", "12", "F", "strong")


def test_shared_labels_of_the_two_corpora(data_root):
    emodb = load_corpus("EMODB", raw_dir=data_root / "EMODB")["label"]
    ravdess = load_corpus("RAVDESS", raw_dir=data_root / "RAVDESS")["label"]
    assert shared_labels(emodb, ravdess) == ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    assert set(emodb) | set(ravdess) == set(CANONICAL_LABELS)


# ------------------------------------------------------------------------- synthetic folders
def test_emodb_folder_recursive_with_bad_names(tmp_path, make_wav, caplog):
    raw = tmp_path / "EMODB"
    make_wav(raw / "wav" / "03a01Wa.wav", 0.1)
    make_wav(raw / "wav" / "sub" / "16b10Tb.wav", 0.1)
    make_wav(raw / "wav" / "08a02Xa.wav", 0.1)   # unknown emotion letter
    make_wav(raw / "notes.wav", 0.1)              # not an EMO-DB name
    (raw / "readme.txt").write_text("not audio")
    with caplog.at_level(logging.WARNING):
        df, skipped = scan_corpus("EMODB", raw_dir=raw)
    assert list(df["file_id"]) == ["03a01Wa", "16b10Tb"]
    assert list(df["label"]) == ["angry", "sad"]
    assert list(df["gender"]) == ["M", "F"]
    assert sorted(Path(p).name for p, _ in skipped) == ["08a02Xa.wav", "notes.wav"]
    assert df.attrs["skipped"] == skipped
    assert "08a02Xa.wav" in caplog.text and "notes.wav" in caplog.text


def test_ravdess_folder_skips_song_and_bad_codes(tmp_path, make_wav):
    raw = tmp_path / "R"
    make_wav(raw / "Actor_03" / "03-01-08-02-02-01-03.wav", 0.1)
    make_wav(raw / "Actor_03" / "03-02-03-01-01-01-03.wav", 0.1)  # song
    make_wav(raw / "Actor_03" / "03-01-09-01-01-01-03.wav", 0.1)  # emotion 09
    df, skipped = scan_corpus("ravdess", raw_dir=raw)
    assert list(df["label"]) == ["surprise"] and list(df["speaker"]) == ["03"]
    assert list(df["gender"]) == ["M"] and list(df["intensity"]) == ["strong"]
    reasons = " ".join(r for _, r in skipped)
    assert len(skipped) == 2 and "vocal channel" in reasons and "emotion" in reasons


def test_folder_without_usable_files_is_an_error(tmp_path, make_wav):
    make_wav(tmp_path / "x.wav", 0.1)
    with pytest.raises(CorpusError, match="no usable EMODB"):
        load_corpus("EMODB", raw_dir=tmp_path)


# ------------------------------------------------------------------------------ resolution
def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(CorpusError) as info:
        load_corpus("IEMOCAP")
    assert all(name in str(info.value) for name in ("EMODB", "RAVDESS", "CSV"))


def test_missing_corpus_lists_the_places_looked_in(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("SER_DATA_ROOT", str(tmp_path / "env"))
    with pytest.raises(CorpusError) as info:
        resolve_raw_dir("EMODB")
    message = str(info.value)
    assert "--raw_dir (not given)" in message
    assert str(tmp_path / "repo" / "data" / "raw" / "EMODB") in message
    assert "SER_DATA_ROOT" in message and str(tmp_path / "env" / "EMODB") in message
    assert "--download" in message


def test_missing_raw_dir_names_only_the_folder_searched(tmp_path, monkeypatch):
    """Issue 21.10: only --raw_dir is searched when it is given, so only it is named."""
    monkeypatch.setattr(corpora, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("SER_DATA_ROOT", str(tmp_path / "env"))
    (tmp_path / "env" / "EMODB").mkdir(parents=True)  # exists, but is not looked at
    with pytest.raises(CorpusError) as info:
        resolve_raw_dir("EMODB", tmp_path / "nowhere")
    message = str(info.value)
    assert f"--raw_dir {tmp_path / 'nowhere'} does not exist" in message
    assert str(tmp_path / "env") not in message and "looked in" not in message
    assert str(tmp_path / "repo") not in message


def test_raw_dir_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("SER_DATA_ROOT", str(tmp_path / "env"))
    (tmp_path / "env" / "RAVDESS").mkdir(parents=True)
    assert resolve_raw_dir("ravdess") == (tmp_path / "env" / "RAVDESS").resolve()
    (tmp_path / "repo" / "data" / "raw" / "RAVDESS").mkdir(parents=True)
    assert resolve_raw_dir("RAVDESS") == (tmp_path / "repo" / "data" / "raw" / "RAVDESS").resolve()
    explicit = tmp_path / "mine"
    explicit.mkdir()
    assert resolve_raw_dir("RAVDESS", explicit) == explicit.resolve()
    monkeypatch.delenv("SER_DATA_ROOT")
    with pytest.raises(CorpusError, match="SER_DATA_ROOT not set"):
        resolve_raw_dir("EMODB")


def test_raw_dir_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "file.wav"
    afile.write_bytes(b"x")
    with pytest.raises(CorpusError, match="not a folder"):
        load_corpus("EMODB", raw_dir=afile)


# -------------------------------------------------------------------------------- manifests
def test_csv_manifest(tmp_path, make_wav):
    make_wav(tmp_path / "audio" / "a.wav", 0.2)
    make_wav(tmp_path / "audio" / "deep" / "b.wav", 0.2)
    elsewhere = make_wav(tmp_path / "other" / "c.wav", 0.2)
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    pd.DataFrame({"path": ["../audio/a.wav", "../audio/deep/b.wav", str(elsewhere),
                           "../audio/missing.wav"],
                  "label": ["Anger", "HAPPINESS", "frustrated", "sadness"]}).to_csv(manifest, index=False)
    df = load_corpus("csv", manifest=manifest)
    assert list(df.columns[:6]) == ["file_id", "path", "label", "speaker", "gender", "dataset"]
    by_name = {Path(p).name: row for p, row in zip(df["path"], df.to_dict("records"))}
    assert by_name["a.wav"]["label"] == "angry"
    assert by_name["b.wav"]["label"] == "happy"
    assert by_name["c.wav"]["label"] == "frustrated"   # unknown label kept, lower-cased
    assert by_name["missing.wav"]["label"] == "sad"      # missing file kept; extraction reports it
    assert set(df["speaker"]) == {"unknown"} and set(df["gender"]) == {""}
    assert by_name["b.wav"]["file_id"] == "..__audio__deep__b"
    assert by_name["a.wav"]["path"] == str((tmp_path / "audio" / "a.wav").resolve())
    assert by_name["c.wav"]["file_id"] == "__".join(elsewhere.with_suffix("").parts[1:])
    assert df["file_id"].is_unique and list(df["file_id"]) == sorted(df["file_id"])
    assert all("/" not in f for f in df["file_id"])


def test_csv_manifest_speaker_column_and_errors(tmp_path, make_wav):
    make_wav(tmp_path / "s1" / "x.wav", 0.2)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,speaker\ns1/x.wav,Fearful,spk7\n")
    df = load_corpus("CSV", manifest=manifest)
    assert (df.loc[0, "file_id"], df.loc[0, "label"], df.loc[0, "speaker"]) == ("s1__x", "fear", "spk7")

    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\nx.wav,angry\n")
    with pytest.raises(CorpusError, match="path"):
        load_corpus("CSV", manifest=bad)
    with pytest.raises(CorpusError, match="--manifest"):
        load_corpus("CSV")
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus("CSV", manifest=tmp_path / "none.csv")


def test_canonical_labels_and_synonyms():
    assert CANONICAL_LABELS == ("angry", "boredom", "calm", "disgust", "fear", "happy", "neutral",
                                "sad", "surprise")
    for word, label in [("anger", "angry"), ("Happiness", "happy"), ("fearful", "fear"),
                        ("surprised", "surprise"), ("SADNESS", "sad"), ("disgusted", "disgust")]:
        assert canonical_label(word) == label
    assert shared_labels(["b", "a", "c"], ("c", "a", "z")) == ["a", "c"]
    assert re.fullmatch(r"[a-z]+", canonical_label(" Other "))


# ------------------------------------------------------------------- manifest collisions
def test_manifest_rows_mapping_to_one_file_id_are_failures(tmp_path, make_wav, caplog):
    """Issue 21.4/21.12: a second file with the same file_id, or the same file with another
    label, is reported as a failure with its own reason; an exact repeat is only warned."""
    for name in ("a/b.wav", "a__b.wav", "x.wav", "x.flac", "y.wav"):
        make_wav(tmp_path / name, 0.2)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na/b.wav,angry\na__b.wav,sad\nx.wav,happy\nx.flac,happy\n"
                        "y.wav,calm\ny.wav,fear\ny.wav,calm\n")
    with caplog.at_level("WARNING"):
        frame, skipped = corpora.scan_corpus("CSV", manifest=manifest)
    assert list(frame["file_id"]) == ["a__b", "x", "y"]
    assert list(frame["label"]) == ["angry", "happy", "calm"]   # first row wins
    failures = frame.attrs["failures"]
    assert [(f, Path(p).name) for f, p, _ in failures] == [("a__b", "a__b.wav"),
                                                          ("x", "x.flac"), ("y", "y.wav")]
    assert "line 3" in failures[0][2] and "collides with" in failures[0][2]
    assert "line 5" in failures[1][2] and str(tmp_path / "x.wav") in failures[1][2]
    assert "label fear" in failures[2][2] and "line 6" in failures[2][2]
    assert len(skipped) == 4 and "repeats line 6" in skipped[-1][1]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "do not parse" not in warning
    assert "collides with" in warning and "label fear" in warning
