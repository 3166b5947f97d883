"""Unit tests of the custom layers of src/models (layers, pooling, augment): NumPy references,
padding, configs."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from src.models.augment import SpecAugment
from src.models.layers import (
    PaddingAttentionMask,
    ReverseValid,
    StreamWeights,
    TemporalBlock,
    WeightLayer,
    ZeroPadded,
    length_mask,
)
from src.models.pooling import MaskedMeanPooling, TemporalPyramidPooling


@pytest.fixture(autouse=True)
def seed():
    keras.utils.set_random_seed(0)


def padded_batch(rng, lengths, time_steps, dim):
    """Random (B, T, dim) batch whose padding frames hold large random values."""
    x = rng.normal(size=(len(lengths), time_steps, dim)).astype(np.float32)
    for b, n in enumerate(lengths):
        x[b, n:] = rng.normal(scale=50.0, size=(time_steps - n, dim))
    return x


def extend(rng, x, extra):
    """Append `extra` random padding frames."""
    pad = rng.normal(scale=50.0, size=(x.shape[0], extra, x.shape[2])).astype(np.float32)
    return np.concatenate([x, pad], axis=1)


# ------------------------------------------------------------------ helpers
def test_length_mask():
    mask = length_mask(tf.constant([3, 0, 7]), 5).numpy()
    expected = np.arange(5)[None, :] < np.array([3, 0, 5])[:, None]
    assert mask.dtype == bool and mask.shape == (3, 5)
    np.testing.assert_array_equal(mask, expected)


def test_zero_padded_and_attention_mask():
    rng = np.random.default_rng(0)
    x = padded_batch(rng, [4, 2], 6, 3)
    out = ZeroPadded()([x, np.array([4, 2])]).numpy()
    np.testing.assert_array_equal(out[0, :4], x[0, :4])
    np.testing.assert_array_equal(out[1, :2], x[1, :2])
    assert np.all(out[0, 4:] == 0) and np.all(out[1, 2:] == 0)
    mask = PaddingAttentionMask()([x, np.array([4, 2])]).numpy()
    assert mask.shape == (2, 6, 6)
    for b, n in enumerate([4, 2]):
        np.testing.assert_array_equal(mask[b], np.tile(np.arange(6) < n, (6, 1)))


# ------------------------------------------------------------------ TemporalBlock
@pytest.mark.parametrize("channels,filters,kernel,dilation,block", [
    (5, 8, 2, 1, "gated"), (8, 8, 3, 4, "residual"), (3, 6, 1, 2, "residual"),
])
def test_temporal_block_shapes(channels, filters, kernel, dilation, block):
    layer = TemporalBlock(filters, kernel, dilation, dropout=0.2, block=block)
    out = layer(np.random.default_rng(1).normal(size=(2, 11, channels)).astype(np.float32))
    assert out.shape == (2, 11, filters)
    assert (layer.projection is not None) == (channels != filters)


def test_temporal_block_is_causal():
    layer = TemporalBlock(6, kernel_size=3, dilation_rate=2, block="residual")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 20, 4)).astype(np.float32)
    changed = x.copy()
    changed[:, 12:] = rng.normal(size=(2, 8, 4))
    a, b = layer(x, training=False).numpy(), layer(changed, training=False).numpy()
    np.testing.assert_allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not np.allclose(a[:, 12:], b[:, 12:])


def test_gated_and_residual_formulas():
    """With zero convolution weights the branch is activation(BN(0)) = 0 at inference, so a
    residual block returns activation(x) and a gated block x * sigmoid(0) = x / 2."""
    x = np.random.default_rng(3).normal(size=(2, 9, 4)).astype(np.float32)
    outputs = {}
    for block in ("residual", "gated"):
        layer = TemporalBlock(4, 2, 1, activation="relu", block=block)
        layer.build(x.shape)
        for conv in layer.convs:
            conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
        outputs[block] = layer(x, training=False).numpy()
    np.testing.assert_allclose(outputs["residual"], np.maximum(x, 0), atol=1e-6)
    np.testing.assert_allclose(outputs["gated"], x / 2, atol=1e-6)


def test_gated_and_residual_differ_with_same_weights():
    x = np.random.default_rng(4).normal(size=(2, 9, 3)).astype(np.float32)
    gated = TemporalBlock(5, 2, 2, block="gated")
    residual = TemporalBlock(5, 2, 2, block="residual")
    gated.build(x.shape)
    residual.build(x.shape)
    residual.set_weights(gated.get_weights())
    assert not np.allclose(gated(x, training=False), residual(x, training=False), atol=1e-3)


# ------------------------------------------------------------------ ReverseValid / pooling
def test_reverse_valid():
    rng = np.random.default_rng(5)
    lengths = np.array([5, 2, 7])
    x = padded_batch(rng, lengths, 7, 3)
    out = ReverseValid()([x, lengths]).numpy()
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(out[b, :n], x[b, :n][::-1])
        np.testing.assert_array_equal(out[b, n:], x[b, n:])
    np.testing.assert_array_equal(ReverseValid()([out, lengths]).numpy(), x)


def test_masked_mean_pooling_and_padding_invariance():
    rng = np.random.default_rng(6)
    lengths = np.array([6, 1, 3])
    x = padded_batch(rng, lengths, 6, 4)
    layer = MaskedMeanPooling()
    out = layer([x, lengths]).numpy()
    assert out.shape == (3, 4)
    expected = np.stack([x[b, :n].mean(0) for b, n in enumerate(lengths)])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer([extend(rng, x, 9), lengths]).numpy(), out, atol=1e-5)


def np_pyramid(x, lengths, scales=(1, 2, 4)):
    out = []
    for b, n in enumerate(lengths):
        global_mean = x[b, :n].mean(0)
        rows = []
        for s in scales:
            for j in range(s):
                start, end = j * n // s, (j + 1) * n // s
                rows.append(x[b, start:end].mean(0) if end > start else global_mean)
        out.append(rows)
    return np.array(out)


def test_temporal_pyramid_pooling_matches_numpy_and_ignores_padding():
    rng = np.random.default_rng(7)
    lengths = np.array([13, 4, 3, 1, 2, 9])  # lengths < 4 exercise the empty-segment fallback
    x = padded_batch(rng, lengths, 13, 5)
    layer = TemporalPyramidPooling()
    out = layer([x, lengths]).numpy()
    assert out.shape == (6, 7, 5)
    np.testing.assert_allclose(out, np_pyramid(x, lengths), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(layer([extend(rng, x, 11), lengths]).numpy(), out, atol=1e-5)
    other = TemporalPyramidPooling(scales=(1, 3))
    np.testing.assert_allclose(other([x, lengths]).numpy(), np_pyramid(x, lengths, (1, 3)),
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ softmax mixtures
def test_weight_layer_uniform_init_and_softmax():
    rng = np.random.default_rng(8)
    levels = [rng.normal(size=(2, 5, 3)).astype(np.float32) for _ in range(4)]
    layer = WeightLayer()
    out = layer(levels).numpy()
    np.testing.assert_allclose(layer.level_weights(), np.full(4, 0.25), rtol=1e-6)
    np.testing.assert_allclose(out, np.mean(levels, axis=0), rtol=1e-5, atol=1e-6)
    logits = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    layer.logits.assign(logits)
    w = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(layer.level_weights(), w, rtol=1e-5)
    assert layer.level_weights().sum() == pytest.approx(1.0, abs=1e-6)
    expected = sum(wk * lv for wk, lv in zip(w, levels))
    np.testing.assert_allclose(layer(levels).numpy(), expected, rtol=1e-5, atol=1e-6)
    stacked = WeightLayer()
    stacked.build((None, 4, None, 3))
    stacked.logits.assign(logits)
    np.testing.assert_allclose(stacked(np.stack(levels, axis=1)).numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def test_linear_weight_layer_is_tim_nets_unnormalised_weighted_sum():
    rng = np.random.default_rng(10)
    levels = [rng.normal(size=(2, 5, 3)).astype(np.float32) for _ in range(4)]
    layer = WeightLayer("linear")
    layer(levels)
    initial = layer.level_weights()
    assert np.all(np.abs(initial) <= 0.05) and np.ptp(initial) > 0  # U(-0.05, 0.05)
    w = np.array([0.5, -1.0, 2.0, 0.0], np.float32)  # not normalised, negative allowed
    layer.logits.assign(w)
    np.testing.assert_allclose(layer.level_weights(), w)
    np.testing.assert_allclose(layer(levels).numpy(), sum(wk * lv for wk, lv in zip(w, levels)),
                               rtol=1e-5, atol=1e-6)
    assert WeightLayer.from_config(layer.get_config()).normalize == "linear"
    with pytest.raises(ValueError, match="level weighting"):
        WeightLayer("sigmoid")


def test_stream_weights():
    rng = np.random.default_rng(9)
    streams = [rng.normal(size=(2, 5, 3)).astype(np.float32) for _ in range(3)]
    layer = StreamWeights()
    np.testing.assert_allclose(layer(streams).numpy(), np.mean(streams, axis=0), atol=1e-6)
    assert layer.stream_weights().shape == (3,)
    assert layer.stream_weights().sum() == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------ SpecAugment
def test_spec_augment_masks_whole_spans_inside_valid_frames_in_training_only():
    rng = np.random.default_rng(0)
    lengths = np.array([60, 25, 8, 1])
    x = rng.normal(loc=3.0, size=(4, 60, 12)).astype(np.float32)  # no exact zeros
    layer = SpecAugment(time_masks=2, freq_masks=2, time_width=0.2, freq_width=0.25, seed=3)
    np.testing.assert_array_equal(layer([x, lengths], training=False), x)
    masked_any = False
    for _ in range(5):
        y = np.asarray(layer([x, lengths], training=True))
        zero = y == 0
        np.testing.assert_array_equal(y[~zero], x[~zero])  # kept values are untouched
        for b, n in enumerate(lengths):
            frames = np.flatnonzero(zero[b].all(axis=1))  # fully masked frames: time spans
            bands = np.flatnonzero(zero[b].all(axis=0))  # fully masked channels: bands
            assert (frames < n).all()  # time spans lie inside the valid frames
            # two spans of at most floor(0.2 n) frames and two bands of at most 3 channels
            assert len(frames) <= 2 * int(0.2 * n) and len(bands) <= 2 * 3
            # every zero is explained by a masked frame or a masked channel
            explained = np.zeros_like(zero[b])
            explained[frames] = True
            explained[:, bands] = True
            np.testing.assert_array_equal(zero[b], explained)
            masked_any |= len(frames) > 0 and len(bands) > 0
    assert masked_any


def test_model_with_spec_augment_is_deterministic_at_inference_and_reloads(tmp_path):
    from src.models.model import ModelConfig, build_model

    config = ModelConfig(filter_size=8, kernel_size=2, stack_size=1, dilation_size=3,
                         time_masks=2, freq_masks=2)
    model = build_model({"MFCC": 10}, 3, config)
    rng = np.random.default_rng(1)
    inputs = {"MFCC": rng.normal(size=(4, 30, 10)).astype(np.float32),
              "length": np.array([30, 20, 10, 5], dtype=np.int32)}
    first = model.predict(inputs, verbose=0)
    np.testing.assert_array_equal(model.predict(inputs, verbose=0), first)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(restored.predict(inputs, verbose=0), first, rtol=1e-6)
    assert restored.get_layer("MFCC_spec_augment").get_config()["time_masks"] == 2
    # training mode draws new masks on every call (it also moves batch-norm statistics)
    assert not np.allclose(model(inputs, training=True), model(inputs, training=True))


# ------------------------------------------------------------------ configs and validation
@pytest.mark.parametrize("layer", [
    TemporalBlock(7, kernel_size=3, dilation_rate=4, dropout=0.3, activation="gelu",
                  block="gated", name="tb"),
    ReverseValid(name="rv"), ZeroPadded(), PaddingAttentionMask(), MaskedMeanPooling(),
    WeightLayer(name="w"), StreamWeights(), TemporalPyramidPooling(scales=(1, 2, 8)),
    SpecAugment(3, 1, time_width=0.2, freq_width=0.4, seed=5),
], ids=lambda layer: type(layer).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    # registered: deserialisation needs no custom_objects
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


@pytest.mark.parametrize("kwargs,message", [
    (dict(filters=4, kernel_size=0), "kernel_size"),
    (dict(filters=0), "filters"),
    (dict(filters=4, dilation_rate=0), "dilation_rate"),
    (dict(filters=4, block="dense"), "unknown block type"),
    (dict(filters=4, activation="not_an_activation"), "unknown activation"),
    (dict(filters=4, dropout=1.5), "dropout"),
])
def test_temporal_block_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemporalBlock(**kwargs)


def test_pyramid_rejects_bad_scales():
    with pytest.raises(ValueError, match="scale"):
        TemporalPyramidPooling(scales=())
    with pytest.raises(ValueError, match="scale"):
        TemporalPyramidPooling(scales=(1, 0))
