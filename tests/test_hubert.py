"""HuBERT extractor with a tiny random model saved to disk (no network, no real weights)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from src.data_processing.config import ExtractionConfig  # noqa: E402
from src.data_processing.features import expected_frames, extract_file  # noqa: E402
from src.data_processing.hubert import HubertExtractor, HubertUnavailable, hubert_frames  # noqa: E402
from src.data_processing.run_data_processing import main  # noqa: E402
from src.data_processing.store import load_feature_set, load_fusion_set  # noqa: E402


def tiny_model(folder, norm: str = "group"):
    torch.manual_seed(0)
    config = transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(32, 32, 32, 32, 32, 32, 32), feat_extract_norm=norm,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    transformers.HubertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("hubert")
    return {"group": str(tiny_model(base / "group", "group")),
            "layer": str(tiny_model(base / "layer", "layer"))}


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    t = [np.arange(n) / 16000 for n in lengths]
    return [(0.3 * np.sin(2 * np.pi * 180 * x) + 0.05 * rng.standard_normal(len(x))).astype(np.float32)
            for x in t]


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_shapes_finite_and_aligned_with_spectral_frames(models, norm):
    cfg = ExtractionConfig(hubert_path=models[norm])
    extractor = HubertExtractor(cfg, device="cpu")
    assert extractor.supports_mask == (norm == "layer")
    lengths = [400, 401, 959, 3200, 16000, 24321]
    inputs = waves(lengths)
    outputs = extractor.extract(inputs)
    for n, out in zip(lengths, outputs):
        assert out.dtype == np.float32 and out.shape == (hubert_frames(n), 32)
        assert out.shape[0] == expected_frames(n, cfg) == 1 + n // 320
        assert np.isfinite(out).all()
    # batched (padding + mask for the layer-norm model) equals one at a time
    for y, out in zip(inputs, outputs):
        np.testing.assert_allclose(out, extractor.extract_one(y), atol=1e-4)


def test_chunking(models):
    cfg = ExtractionConfig(hubert_path=models["group"], hubert_chunk_seconds=2.0)
    chunked = HubertExtractor(cfg, device="cpu")
    whole = HubertExtractor(dataclasses.replace(cfg, hubert_chunk_seconds=20.0), device="cpu")
    short = waves([24000])[0]   # 1.5 s: shorter than a chunk -> identical
    np.testing.assert_array_equal(chunked.extract_one(short), whole.extract_one(short))
    long = waves([16000 * 5 + 123], seed=1)[0]   # 5 s in 2 s chunks with 1 s overlap
    n_frames = 1 + len(long) // 320   # 251 frames; chunks of 100 frames every 50 frames
    chunks = chunked._chunks(np.pad(long, 200))
    assert [start for start, _ in chunks] == [0, 50, 100, 150, 200]
    assert len(chunks) == int(np.ceil((n_frames - 100) / 50)) + 1
    # stitching keeps each global frame exactly once, in order
    parts = [(start, (start + np.arange(min(100, n_frames - start)))[:, None].astype(np.float32))
             for start, _ in chunks]
    np.testing.assert_array_equal(chunked._stitch(parts)[:, 0], np.arange(n_frames))
    a, b = chunked.extract_one(long), whole.extract_one(long)
    assert a.shape == b.shape == (1 + len(long) // 320, 32)
    assert np.isfinite(a).all()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9   # attention context differs a bit

    # Layer 0 of a layer-norm model only sees +-8 frames (conv front end + positional conv),
    # and the stitching keeps frames >= 25 from chunk edges, so chunked == whole there.
    local = ExtractionConfig(hubert_path=models["layer"], hubert_layer=0, hubert_chunk_seconds=2.0)
    a0 = HubertExtractor(local, device="cpu").extract_one(long)
    b0 = HubertExtractor(dataclasses.replace(local, hubert_chunk_seconds=20.0), device="cpu").extract_one(long)
    np.testing.assert_allclose(a0, b0, atol=1e-4)


def test_layer_selection(models):
    cfg = ExtractionConfig(hubert_path=models["group"])
    y = waves([8000])[0]
    last = HubertExtractor(cfg, device="cpu").extract_one(y)
    layer2 = HubertExtractor(dataclasses.replace(cfg, hubert_layer=2), device="cpu").extract_one(y)
    layer0 = HubertExtractor(dataclasses.replace(cfg, hubert_layer=0), device="cpu").extract_one(y)
    np.testing.assert_allclose(last, layer2, atol=1e-6)   # 2 layers: last == layer 2
    assert not np.allclose(layer0, last)
    with pytest.raises(ValueError, match="hubert_layer"):
        HubertExtractor(dataclasses.replace(cfg, hubert_layer=3), device="cpu")


def test_missing_weights_raise_hubert_unavailable(tmp_path):
    with pytest.raises(HubertUnavailable) as info:
        HubertExtractor(ExtractionConfig(hubert_path=str(tmp_path / "missing")))
    message = str(info.value)
    assert "facebook/hubert-base-ls960" in message and "--hubert_path" in message
    assert isinstance(info.value, RuntimeError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubertUnavailable, match="hubert-base-ls960"):
        HubertExtractor(ExtractionConfig(hubert_path=str(tmp_path / "empty")))


def test_resampled_input_and_extract_file(models, tmp_path, make_wav):
    cfg = ExtractionConfig(hubert_path=models["group"])
    path = make_wav(tmp_path / "x.wav", 1.1, sr=44100)
    out = extract_file(path, cfg, ["MFCC", "HuBERT"])
    assert out["HuBERT"].shape == (out["MFCC"].shape[0], 32) == (1 + 17600 // 320, 32)


def test_cli_hubert_and_fusion(models, tmp_path, make_wav, capsys):
    raw = tmp_path / "raw"
    for i, name in enumerate(["03a01Wa", "08a02Tb", "10a04Nc"]):
        make_wav(raw / f"{name}.wav", 0.7 + 0.3 * i, seed=i)
    (raw / "16a05Fa.wav").write_bytes(b"")
    root = tmp_path / "f"
    code = main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root", str(root),
                 "--features", "MFCC,HuBERT", "--hubert_path", models["layer"], "--workers", "1",
                 "--no_progress"])
    assert code == 0
    assert "EMODB HuBERT: 3 ok, 1 failed" in capsys.readouterr().out
    fs = load_feature_set("EMODB", "HuBERT", root)
    assert fs.config.hubert_path == models["layer"]
    arrays, meta, _ = load_fusion_set("EMODB", ["MFCC", "HuBERT"], root)
    for m, h, n in zip(arrays["MFCC"], arrays["HuBERT"], meta["n_frames"]):
        assert m.shape == (n, 40) and h.shape == (n, 32)
    mfcc = load_feature_set("EMODB", "MFCC", root)
    assert list(meta["n_frames"]) == [a.shape[0] for a in mfcc.arrays]   # nothing trimmed

    code = main(["--dataset", "EMODB", "--raw_dir", str(raw), "--features_root", str(root),
                 "--features", "HuBERT", "--hubert_path", str(tmp_path / "nope"), "--no_progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--hubert_path" in err


def test_hub_id_without_cache_or_network_fails_fast(tmp_path, monkeypatch):
    import time

    from src.data_processing import hubert

    monkeypatch.setattr(hubert, "LOCAL_DEFAULT", tmp_path / "no_local_copy")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubertUnavailable) as info:
        HubertExtractor(ExtractionConfig(hubert_path="facebook/hubert-base-ls960"))
    assert time.perf_counter() - start < 20
    assert "HF_HUB_OFFLINE" in str(info.value) and "hf download" in str(info.value)
