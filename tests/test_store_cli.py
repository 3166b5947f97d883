"""Feature store and the extraction CLI: layout, loaders, exit codes, manifests and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from src.data_processing import store
from src.data_processing.config import ExtractionConfig
from src.data_processing.features import extract_file
from src.data_processing.run_data_processing import extract_dataset, main
from src.data_processing.store import (FeatureSetNotFound, feature_set_dir, load_feature_set,
                                       load_fusion_set)

REPO = Path(__file__).resolve().parents[1]
CFG = ExtractionConfig()
LETTERS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad",
           "N": "neutral"}
FREQS = {"W": 200.0, "L": 300.0, "E": 450.0, "A": 600.0, "F": 800.0, "T": 1000.0, "N": 1300.0}


def same_features(stored, recomputed):
    """The stored array is the file's features: equal up to float32 rounding (the pipeline
    computes with one BLAS thread, a direct call with all of them, and their sums round
    differently in the last bits)."""
    assert stored.shape == recomputed.shape and stored.dtype == recomputed.dtype
    np.testing.assert_allclose(stored, recomputed, rtol=1e-5, atol=1e-4)


def emodb_names(n: int) -> list[str]:
    names = []
    for i in range(n):
        speaker = ("03", "08", "10", "16")[i % 4]
        letter = "WLEAFTN"[(i // 4) % 7]
        names.append(f"{speaker}{'ab'[i % 2]}{i // 28:02d}{letter}{'abcdefg'[(i // 4) % 7]}")
    assert len(set(names)) == n
    return names


def write_corpus(root: Path, make_wav, n: int = 12, seconds: float = 0.6, sr: int = 16000,
                 channels: int = 1) -> list[str]:
    names = emodb_names(n)
    for i, name in enumerate(names):
        make_wav(root / "wav" / f"{name}.wav", seconds + 0.05 * (i % 5), sr=sr, channels=channels,
                 freq=FREQS[name[5]], seed=i)
    return names


def set_dir(root: Path, feature: str, config: ExtractionConfig = CFG, dataset="EMODB") -> Path:
    return feature_set_dir(root, dataset, feature, config)


def one_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------------ CLI
def test_cli_end_to_end(tmp_path, make_wav, capsys):
    raw = tmp_path / "raw"
    names = write_corpus(raw, make_wav, n=12)
    (raw / "wav" / "03a05Wa.wav").write_bytes(b"")                         # zero bytes
    sf.write(raw / "wav" / "08a05Ta.wav", np.zeros(8000, np.float32), 16000)  # silent
    make_wav(raw / "wav" / "readme.wav", 0.3)                               # name does not parse
    root = tmp_path / "features"

    code = main(["--dataset", "emodb", "--raw_dir", str(raw), "--features_root", str(root),
                 "--workers", "2", "--no_progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "EMODB MFCC: 12 ok, 2 failed" in out and "EMODB LogMel: 12 ok, 2 failed" in out
    assert "x real time" in out

    for feature, dims in (("MFCC", 40), ("LogMel", 128)):
        folder = set_dir(root, feature)
        assert folder.name == CFG.feature_hash(feature)
        assert {"metadata.csv", "config.json", "failures.csv", "COMPLETE"} <= {p.name for p in folder.iterdir()}
        info = json.loads((folder / "config.json").read_text())
        assert info["feature"] == feature and info["hash"] == folder.name
        assert info["dataset"] == "EMODB" and info["n_files"] == 12
        assert info["extraction"] == CFG.to_dict() and info["created"]
        meta = pd.read_csv(folder / "metadata.csv", dtype=str)
        assert list(meta.columns[:7]) == ["file_id", "label", "speaker", "gender", "n_frames",
                                          "duration_s", "path"]
        assert sorted(meta["file_id"]) == sorted(names) == list(meta["file_id"])
        fails = pd.read_csv(folder / "failures.csv")
        reasons = dict(zip(fails["file_id"], fails["reason"]))
        assert set(reasons) == {"03a05Wa", "08a05Ta"}
        assert "empty" in reasons["03a05Wa"] and "silent" in reasons["08a05Ta"]
        assert not list(folder.glob("03a05Wa.npy")) and not list(folder.glob("*.tmp"))

        fs = load_feature_set("EMODB", feature, features_root=root)
        assert fs.feature == feature and fs.config == CFG and fs.path == folder
        assert len(fs.arrays) == 12
        for array, row in zip(fs.arrays, fs.metadata.itertuples()):
            assert array.dtype == np.float32 and array.shape == (row.n_frames, dims)
            assert np.isfinite(array).all()
            assert row.label == LETTERS[row.file_id[5]] and row.speaker == row.file_id[:2]
            assert row.gender == ("M" if row.speaker in ("03", "10") else "F")
            assert row.duration_s == pytest.approx(sf.info(row.path).duration, abs=1e-5)
            same_features(array, extract_file(row.path, CFG, [feature])[feature])


def test_new_settings_make_a_new_set_and_selection(tmp_path, make_wav, capsys):
    raw = tmp_path / "raw"
    write_corpus(raw, make_wav, n=6)
    root = tmp_path / "f"
    base = ["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root", str(root),
            "--no_progress", "--workers", "1"]
    assert main(base) == 0
    first = set_dir(root, "MFCC")
    time.sleep(0.01)
    assert main(base + ["--n_mfcc", "20"]) == 0
    out = capsys.readouterr().out
    second = set_dir(root, "MFCC", ExtractionConfig(n_mfcc=20))
    assert first != second and first.parent == second.parent
    assert "LogMel: 6 ok, 0 failed, 6 reused" in out   # n_mfcc does not change LogMel
    # the default-settings set wins over a newer one; an explicit hash picks any set
    assert load_feature_set("EMODB", "MFCC", root).path == first
    assert load_feature_set("EMODB", "mfcc", root, config_hash=second.name).arrays[0].shape[1] == 20
    time.sleep(0.01)
    assert main(base + ["--n_mfcc", "13"]) == 0
    third = set_dir(root, "MFCC", ExtractionConfig(n_mfcc=13))
    (first / "COMPLETE").unlink()   # an unfinished set is never used; then the newest wins
    assert load_feature_set("EMODB", "MFCC", root).path == third

    with pytest.raises(FeatureSetNotFound) as info:
        load_feature_set("RAVDESS", "MFCC", root)
    assert ("python -m src.data_processing.run_data_processing --dataset RAVDESS --features MFCC"
            in str(info.value))
    with pytest.raises(FeatureSetNotFound, match=second.name):
        load_feature_set("EMODB", "MFCC", root, config_hash="deadbeef")


def test_preset_timnet_and_overrides(tmp_path, make_wav):
    raw = tmp_path / "raw"
    write_corpus(raw, make_wav, n=4, seconds=1.0, sr=22050)
    root = tmp_path / "f"
    assert main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root", str(root),
                 "--preset", "timnet", "--n_mfcc", "13", "--features", "mfcc", "--no_progress"]) == 0
    fs = load_feature_set("EMODB", "MFCC", root)
    assert (fs.config.sample_rate, fs.config.hop_length, fs.config.n_mfcc) == (22050, 512, 13)
    assert fs.config.fixed_samples == 96000
    assert all(a.shape == (1 + 96000 // 512, 13) for a in fs.arrays)
    assert not (root / "EMODB" / "LogMel").exists()


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "IEMOCAP"], "EMODB"),
    (["--dataset", "EMODB", "--normalize", "loud"], "--normalize"),
    (["--dataset", "EMODB", "--features", "MFCC,Pitch"], "Pitch"),
    (["--dataset", "EMODB", "--workers", "-1"], "--workers"),
    (["--dataset", "CSV"], "--manifest"),
    (["--dataset", "EMODB", "--win_length", "1024"], "win_length"),
])
def test_bad_flags_exit_2_with_one_line(args, needle, capsys):
    assert main(args) == 2
    assert needle in one_line(capsys.readouterr().err)


def test_missing_and_unreadable_folders(tmp_path, capsys):
    assert main(["--dataset", "EMODB", "--raw_dir", str(tmp_path / "nope")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--raw_dir {tmp_path / 'nope'} does not exist" in line and "--download" in line
    afile = tmp_path / "a_file"
    afile.write_text("x")
    assert main(["--dataset", "RAVDESS", "--raw_dir", str(afile)]) == 2
    assert "not a folder" in one_line(capsys.readouterr().err)


def test_exit_1_when_nothing_usable_or_strict(tmp_path, make_wav, capsys):
    raw = tmp_path / "bad"
    (raw / "wav").mkdir(parents=True)
    for name in emodb_names(3):
        (raw / "wav" / f"{name}.wav").write_text("not audio")
    assert main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root",
                 str(tmp_path / "f"), "--no_progress"]) == 1
    captured = capsys.readouterr()
    assert "no usable files" in captured.err and "Traceback" not in captured.err
    assert not (set_dir(tmp_path / "f", "MFCC") / "COMPLETE").exists()
    assert len(pd.read_csv(set_dir(tmp_path / "f", "MFCC") / "failures.csv")) == 3

    good = tmp_path / "mixed"
    write_corpus(good, make_wav, n=3)
    (good / "wav" / "16a09Nb.wav").write_bytes(b"")
    argv = ["--dataset", "EMODB", "--raw_dir", str(good), "--features_root", str(tmp_path / "g"),
            "--no_progress", "--workers", "1"]
    assert main(argv) == 0
    assert main(argv + ["--strict"]) == 1
    assert "--strict" in capsys.readouterr().err


def test_csv_manifest_slice_of_real_emodb(data_root, tmp_path, capsys):
    wavs = sorted((data_root / "EMODB" / "wav").glob("*.wav"))[::27][:20]
    assert len(wavs) == 20
    words = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
             "T": "sadness", "N": "neutral"}
    manifest = tmp_path / "slice.csv"
    rows = [{"path": str(p), "label": words[p.stem[5]], "speaker": p.stem[:2]} for p in wavs]
    rows.append({"path": "gone/03a01Fa.wav", "label": "happy", "speaker": "03"})
    pd.DataFrame(rows).to_csv(manifest, index=False)
    root = tmp_path / "f"
    code = main(["--dataset", "csv", "--manifest", str(manifest), "--features_root", str(root),
                 "--no_progress", "--workers", "2"])
    assert code == 0
    assert "SLICE MFCC: 20 ok, 1 failed" in capsys.readouterr().out   # named after slice.csv
    fs = load_feature_set("SLICE", "LogMel", root)
    assert sorted(fs.metadata["label"]) == sorted(LETTERS[p.stem[5]] for p in wavs)
    assert list(fs.metadata["speaker"]) == [Path(p).stem[:2] for p in fs.metadata["path"]]
    for array, path in zip(fs.arrays, fs.metadata["path"]):
        same_features(array, extract_file(path, CFG, ["LogMel"])["LogMel"])
        assert array.shape[0] == 1 + sf.info(path).frames // 320
    fails = pd.read_csv(fs.path / "failures.csv")
    assert list(fails["file_id"]) == ["gone__03a01Fa"]
    assert "cannot read audio" in fails["reason"][0]


def test_manifest_with_name(tmp_path, make_wav):
    make_wav(tmp_path / "a" / "x.wav", 0.5)
    (tmp_path / "m.csv").write_text("path,label\na/x.wav,calm\n")
    assert main(["--dataset", "CSV", "--manifest", str(tmp_path / "m.csv"), "--name", "mine",
                 "--features_root", str(tmp_path / "f"), "--no_progress", "--workers", "0"]) == 0
    fs = load_feature_set("MINE", "MFCC", tmp_path / "f")
    assert list(fs.metadata["file_id"]) == ["a__x"] and list(fs.metadata["label"]) == ["calm"]


# ---------------------------------------------------------------------------------- resume
def test_resume_after_sigkill_is_bit_identical(tmp_path, make_wav):
    raw = tmp_path / "raw"
    names = write_corpus(raw, make_wav, n=40, seconds=6.0, sr=48000, channels=2)
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    command = [sys.executable, "-m", "src.data_processing.run_data_processing", "--dataset",
               "EMODB", "--raw_dir", str(raw), "--features_root", str(killed_root),
               "--workers", "1", "--no_progress"]
    mfcc_dir = set_dir(killed_root, "MFCC")
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if mfcc_dir.is_dir() and len(list(mfcc_dir.glob("*.npy"))) >= 3:
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)   # the CLI and its worker process
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    done = {p.stem for p in mfcc_dir.glob("*.npy")}
    assert 0 < len(done) < 40 and not (mfcc_dir / "COMPLETE").exists()
    for path in mfcc_dir.glob("*.npy"):   # whatever exists under a final name is whole
        assert np.load(path).shape[1] == 40

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "40 ok, 0 failed" in rerun.stdout and "reused" in rerun.stdout
    assert main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root", str(clean_root),
                 "--workers", "2", "--no_progress"]) == 0

    assert not [p for p in killed_root.rglob("*") if p.name.endswith(".tmp")]
    for feature in ("MFCC", "LogMel"):
        a, b = set_dir(killed_root, feature), set_dir(clean_root, feature)
        assert (a / "COMPLETE").exists()
        assert sorted(p.name for p in a.glob("*.npy")) == sorted(f"{n}.npy" for n in names)
        for path in a.glob("*.npy"):
            x, y = np.load(path), np.load(b / path.name)
            assert x.dtype == y.dtype == np.float32 and x.shape == y.shape
            assert x.tobytes() == y.tobytes(), path.name
        pd.testing.assert_frame_equal(pd.read_csv(a / "metadata.csv"), pd.read_csv(b / "metadata.csv"))


def test_changed_source_path_is_recomputed(tmp_path, make_wav):
    """A resumed set never keeps an array made from another file with the same file_id."""
    make_wav(tmp_path / "one" / "x.wav", 0.5, freq=200.0)
    make_wav(tmp_path / "two" / "x.wav", 0.7, freq=900.0)
    corpus = pd.DataFrame({"file_id": ["x"], "path": [str(tmp_path / "one" / "x.wav")],
                           "label": ["calm"], "speaker": ["s"], "gender": [""], "dataset": ["CSV"]})
    root = tmp_path / "f"
    extract_dataset(corpus, CFG, ["MFCC"], root, "CSV", workers=0, progress=False)
    corpus.loc[0, "path"] = str(tmp_path / "two" / "x.wav")
    summary = extract_dataset(corpus, CFG, ["MFCC"], root, "CSV", workers=0, progress=False)
    assert summary["MFCC"]["n_reused"] == 0 and summary["MFCC"]["n_computed"] == 1
    fs = load_feature_set("CSV", "MFCC", root)
    same_features(fs.arrays[0], extract_file(corpus.loc[0, "path"], CFG, ["MFCC"])["MFCC"])


# --------------------------------------------------------------------------------- loaders
def fake_set(root: Path, feature: str, frames: dict[str, int], config: ExtractionConfig = CFG,
             dims: int = 3, dataset="EMODB") -> Path:
    folder = feature_set_dir(root, dataset, feature, config)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for file_id, n in frames.items():
        value = float(ord(file_id[0]))
        np.save(folder / f"{file_id}.npy", np.full((n, dims), value, np.float32)
                + np.arange(n, dtype=np.float32)[:, None])
        rows.append({"file_id": file_id, "label": "sad", "speaker": "07", "gender": "F",
                     "n_frames": n, "duration_s": n * 0.02, "path": f"/x/{file_id}.wav",
                     "dataset": dataset})
    store.finish_set(folder, feature=feature, dataset=dataset, config=config,
                     metadata=pd.DataFrame(rows), failures=pd.DataFrame())
    return folder


def test_fusion_intersects_and_trims(tmp_path, caplog):
    fake_set(tmp_path, "MFCC", {"a": 10, "b": 11, "c": 12})
    fake_set(tmp_path, "LogMel", {"b": 11, "c": 13, "d": 5}, dims=4)
    arrays, meta, configs = load_fusion_set("EMODB", ["MFCC", "LogMel"], tmp_path)
    assert list(meta["file_id"]) == ["b", "c"] and list(meta["n_frames"]) == [11, 12]
    assert meta["speaker"].tolist() == ["07", "07"]   # stays a string
    assert [a.shape for a in arrays["MFCC"]] == [(11, 3), (12, 3)]
    assert [a.shape for a in arrays["LogMel"]] == [(11, 4), (12, 4)]
    np.testing.assert_array_equal(arrays["LogMel"][1][:, 0], ord("c") + np.arange(12))
    assert configs == {"MFCC": CFG, "LogMel": CFG}


def test_fusion_refuses_misaligned_streams(tmp_path):
    fake_set(tmp_path, "MFCC", {"a": 10})
    fake_set(tmp_path, "LogMel", {"a": 7}, config=ExtractionConfig(hop_length=512))
    with pytest.raises(ValueError, match="frame steps"):
        load_fusion_set("EMODB", ["MFCC", "LogMel"], tmp_path)


def test_loading_2000_files_is_fast(tmp_path):
    frames = {f"f{i:04d}": 100 + i % 200 for i in range(2000)}
    fake_set(tmp_path, "MFCC", frames, dims=40)
    start = time.perf_counter()
    fs = load_feature_set("EMODB", "MFCC", tmp_path)
    elapsed = time.perf_counter() - start
    assert len(fs.arrays) == 2000 and fs.arrays[1999].shape == (100 + 1999 % 200, 40)
    assert elapsed < 5.0, elapsed


# ------------------------------------------------------------------- fixed-length corpora
def test_fixed_length_warning_rule(tmp_path, make_wav):
    """The warning needs >= 20 files and >= 90 % of them at one length (to 10 ms)."""
    from src.data_processing.audio import fixed_length_warning

    def corpus(n_same: int, n_other: int) -> list[Path]:
        folder = tmp_path / f"{n_same}-{n_other}"
        return ([make_wav(folder / f"s{i}.wav", 0.75, seed=i) for i in range(n_same)]
                + [make_wav(folder / f"o{i}.wav", 0.5 + 0.1 * i, seed=i) for i in range(n_other)])

    assert fixed_length_warning(corpus(22, 2)).startswith("22 of 24 files last exactly 0.75 s")
    assert fixed_length_warning(corpus(21, 3)) is None        # 87.5 % < 90 %
    assert fixed_length_warning(corpus(19, 0)) is None        # too few files to tell
    assert fixed_length_warning(corpus(20, 0) + [tmp_path / "missing.wav"]).startswith(
        "20 of 20 files")                                       # unreadable files are skipped


def test_extraction_warns_on_a_fixed_length_corpus(tmp_path, make_wav, capsys):
    """A corpus cut to one length (like the RAVDESS copy here, 2.39 s) gets one warning line
    naming the length after extraction; a corpus of varied lengths gets none."""
    rows = ["path,label,speaker"]
    for i in range(24):
        make_wav(tmp_path / "cut" / f"{i}.wav", 0.75, freq=200.0 + 20 * (i % 2), seed=i)
        rows.append(f"cut/{i}.wav,{'ab'[i % 2]},s{i % 3}")
    (tmp_path / "cut.csv").write_text("\n".join(rows) + "\n")
    assert main(["--dataset", "CSV", "--manifest", str(tmp_path / "cut.csv"), "--features", "MFCC",
                 "--features_root", str(tmp_path / "f"), "--no_progress", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: CUT: 24 of 24 files last exactly 0.75 s" in err

    write_corpus(tmp_path / "raw", make_wav, n=24)
    assert main(["--dataset", "EMODB", "--raw_dir", str(tmp_path / "raw"), "--features", "MFCC",
                 "--features_root", str(tmp_path / "f"), "--no_progress", "--workers", "0"]) == 0
    assert "last exactly" not in capsys.readouterr().err
