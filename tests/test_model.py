"""build_model, ModelConfig and receptive_field: shapes, padding invariance, saving, training."""
import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from src.models.layers import TemporalBlock, WeightLayer
from src.models.model import PRESETS, ModelConfig, build_model, receptive_field

TINY = ModelConfig(filter_size=8, kernel_size=2, stack_size=1, dilation_size=3, dropout=0.1,
                   n_heads=2, fusion_width=8, head_units=(16, 8), head_dropout=0.1)


@pytest.fixture(autouse=True)
def seed():
    keras.utils.set_random_seed(0)


def make_batch(rng, dims, lengths, time_steps):
    """Dict batch; padding frames (t >= length) hold large random values."""
    batch = {}
    for name, dim in dims.items():
        x = rng.normal(size=(len(lengths), time_steps, dim)).astype(np.float32)
        for b, n in enumerate(lengths):
            x[b, n:] = rng.normal(scale=30.0, size=(time_steps - n, dim))
        batch[name] = x
    batch["length"] = np.asarray(lengths, np.int32)
    return batch


def randomize_weights(model, rng):
    """Perturb every weight (biases, BN statistics, level logits, ...) so that zero padding
    is not accidentally neutral, as it is at initialisation (zero biases, identity BN)."""
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        if "variance" in weight.path:
            value = rng.uniform(0.5, 2.0, size=value.shape)
        else:
            value = value + rng.normal(scale=0.3, size=value.shape)
        weight.assign(value.astype(value.dtype if value.dtype != np.float64 else np.float32))


def with_embedding(model):
    return keras.Model(model.inputs, [model.get_layer("embedding").output, model.output])


# ------------------------------------------------------------------ shapes and structure
@pytest.mark.parametrize("dims,overrides", [
    ({"MFCC": 6}, {}),
    ({"MFCC": 6}, dict(block="gated", use_attention=False, use_dtpm=False)),
    ({"LogMel": 9}, dict(stack_size=2, dilation_size=2, kernel_size=3, use_dtpm=False)),
    ({"MFCC": 6, "LogMel": 12, "HuBERT": 10, "Other": 3}, dict(use_attention=False)),
    ({"MFCC": 6}, dict(use_attention=False, use_dtpm=False, head_units=())),  # TIM-Net head
    ({"MFCC": 6}, dict(head_units=())),
])
def test_output_shapes_and_named_layers(dims, overrides):
    config = dataclasses.replace(TINY, **overrides)
    model = build_model(dims, 5, config)
    assert {t.name for t in model.inputs} == set(dims) | {"length"}
    batch = make_batch(np.random.default_rng(0), dims, [10, 4, 1], 10)
    embedding, probs = with_embedding(model)(batch, training=False)
    width = config.head_units[-1] if config.head_units else config.filter_size
    assert probs.shape == (3, 5) and embedding.shape == (3, width)
    np.testing.assert_allclose(probs.numpy().sum(1), 1.0, rtol=1e-5)
    assert model.output.shape[-1] == 5 and model.layers[-1].name == "probabilities"
    blocks = [layer for layer in model.layers if isinstance(layer, TemporalBlock)]
    assert len(blocks) == 2 * config.stack_size * config.dilation_size  # two directions
    level_layer = model.get_layer("level_weights")
    assert isinstance(level_layer, WeightLayer)
    assert level_layer.level_weights().shape == (config.stack_size * config.dilation_size,)
    if len(dims) > 1:
        assert model.get_layer("stream_weights").stream_weights().shape == (len(dims),)


def test_norm_stats_standardise_inside_the_model():
    rng = np.random.default_rng(1)
    mean, variance = rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(
        np.float32)
    model = build_model({"MFCC": 4}, 3, TINY, norm_stats={"MFCC": (mean, variance)})
    norm = model.get_layer("norm_MFCC")
    x = rng.normal(size=(2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(norm(x).numpy(), (x - mean) / np.sqrt(variance),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="norm_stats"):
        build_model({"MFCC": 4}, 3, TINY, norm_stats={"MFCC": (mean[:3], variance[:3])})
    with pytest.raises(ValueError, match="norm_stats"):
        build_model({"MFCC": 4}, 3, TINY, norm_stats={"LogMel": (mean, variance)})


# ------------------------------------------------------------------ the key property
@pytest.mark.parametrize("dims,config", [
    ({"MFCC": 5}, TINY),
    ({"MFCC": 5}, dataclasses.replace(TINY, block="gated", stack_size=2, kernel_size=3)),
    ({"MFCC": 5}, dataclasses.replace(TINY, use_attention=False, use_dtpm=False)),
    ({"MFCC": 5, "LogMel": 8, "HuBERT": 6}, TINY),
], ids=["single", "single-gated", "single-plain", "fusion"])
def test_padding_never_changes_predictions(dims, config):
    rng = np.random.default_rng(2)
    model = with_embedding(build_model(dims, 4, config, norm_stats={
        name: (np.full(d, 0.5, np.float32), np.full(d, 2.0, np.float32))
        for name, d in dims.items()}))
    randomize_weights(model, rng)
    lengths = [17, 11, 3, 2]
    batch = make_batch(rng, dims, lengths, 17)
    embedding, probs = (t.numpy() for t in model(batch, training=False))
    # more padding, different padding values
    longer = make_batch(rng, dims, lengths, 30)
    for name in dims:
        longer[name][:, :17] = batch[name]
        for b, n in enumerate(lengths):
            longer[name][b, n:17] = rng.normal(scale=30.0, size=(17 - n, dims[name]))
    embedding2, probs2 = (t.numpy() for t in model(longer, training=False))
    np.testing.assert_allclose(embedding2, embedding, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs2, probs, rtol=1e-5, atol=1e-5)
    # each utterance alone, unpadded, gives the same result as in the padded batch
    for b, n in enumerate(lengths):
        alone = {name: batch[name][b:b + 1, :n] for name in dims}
        alone["length"] = np.array([n], np.int32)
        np.testing.assert_allclose(model(alone, training=False)[0].numpy()[0], embedding[b],
                                   rtol=1e-5, atol=1e-5)
    # sanity: the test is sensitive to the valid frames (first and last valid frame)
    for frame in (0, lengths[1] - 1):
        changed = {k: v.copy() for k, v in batch.items()}
        name = next(iter(dims))
        changed[name][1, frame] += 3.0
        moved = model(changed, training=False)[0].numpy()
        assert not np.allclose(moved[1], embedding[1], atol=1e-4)


# ------------------------------------------------------------------ saving
@pytest.mark.parametrize("dims", [{"MFCC": 5}, {"MFCC": 5, "LogMel": 8}],
                         ids=["single", "mfcc+logmel"])
def test_save_load_round_trip(tmp_path, dims):
    rng = np.random.default_rng(3)
    stats = {"MFCC": (rng.normal(size=5).astype(np.float32), np.full(5, 3.0, np.float32))}
    model = build_model(dims, 3, TINY, norm_stats=stats)
    # move the weights away from their initial values (level weights, BN statistics)
    model.get_layer("level_weights").logits.assign([0.3, -0.2, 0.9])
    batch = make_batch(rng, dims, [9, 5], 9)
    model(batch, training=True)  # updates the BatchNormalization moving statistics
    expected = model(batch, training=False).numpy()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(batch, training=False).numpy(), expected, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(loaded.get_layer("level_weights").level_weights(),
                               model.get_layer("level_weights").level_weights())
    np.testing.assert_allclose(with_embedding(loaded)(batch)[0],
                               with_embedding(model)(batch)[0], atol=1e-6)


# ------------------------------------------------------------------ config
def test_receptive_field_matches_direct_count():
    """Count the input frames that influence the last output frame of one direction."""
    for config in (dataclasses.replace(TINY, kernel_size=3, stack_size=2, dilation_size=3),
                   dataclasses.replace(TINY, kernel_size=2, stack_size=1, dilation_size=4)):
        time_steps = receptive_field(config) + 15
        x = tf.constant(np.random.default_rng(4).normal(size=(1, time_steps, 3)), tf.float32)
        blocks = [TemporalBlock(4, config.kernel_size, d, activation="linear")
                  for d in config.dilations]
        with tf.GradientTape() as tape:
            tape.watch(x)
            h = x
            for block in blocks:
                h = block(h, training=False)
            last = tf.reduce_sum(h[:, -1])
        influence = np.abs(tape.gradient(last, x).numpy()[0]).sum(1) > 0
        count = int(influence.sum())
        assert influence[time_steps - count:].all()  # a contiguous window ending at the frame
        assert count == receptive_field(config)
    assert receptive_field(ModelConfig()) == 1 + 3 * 2 * 2 * 255


def test_config_dict_round_trip_and_presets():
    for config in PRESETS.values():
        values = json.loads(json.dumps(config.to_dict()))
        assert ModelConfig.from_dict(values) == config
    assert PRESETS["default"] == ModelConfig()
    assert PRESETS["default"].dilations == [2 ** i for i in range(8)] * 3
    light = PRESETS["light"]
    assert (light.filter_size, light.kernel_size, light.stack_size, light.dilation_size) == \
        (39, 2, 1, 8)


def test_timnet_preset_is_tim_nets_classifier_on_linearly_weighted_pooled_levels():
    """TIM-Net: softmax(Dense(sum_k w_k * GAP(fwd_k + bwd_k))) with unconstrained w, no
    attention, pyramid or head (the mean over time does not depend on re-reversing bwd_k)."""
    config = PRESETS["timnet"]
    assert (config.filter_size, config.kernel_size, config.stack_size, config.dilation_size,
            config.block, config.level_weights, config.head_units) == \
        (39, 2, 1, 8, "gated", "linear", ())
    assert not config.use_dtpm and not config.use_attention
    model = build_model({"MFCC": 6}, 4, config)
    names = {layer.name for layer in model.layers}
    assert not names & {"temporal_attention", "pyramid_pooling", "head_dense0"}
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 20, 6)).astype(np.float32)
    inputs = {"MFCC": x, "length": np.full(3, 20, np.int32)}
    levels = keras.Model(model.inputs, [model.get_layer(f"tcn_level{k}").output
                                        for k in range(8)])(inputs)
    w = model.get_layer("level_weights").level_weights()
    assert np.all(np.abs(w) <= 0.05)
    pooled = sum(wk * np.asarray(h).mean(axis=1) for wk, h in zip(w, levels))
    kernel, bias = model.get_layer("probabilities").get_weights()
    logits = pooled @ kernel + bias
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(model(inputs)), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    (dict(kernel_size=0), "kernel_size"),
    (dict(filter_size=-3), "filter_size"),
    (dict(block="lstm"), "unknown block type"),
    (dict(level_weights="sum"), "unknown level weighting"),
    (dict(activation="frobnicate"), "unknown activation"),
    (dict(dropout=1.0), "dropout"),
    (dict(head_units=(64, 0)), "head_units"),
    (dict(n_heads=0), "n_heads"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**overrides)


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_classes"):
        build_model({"MFCC": 4}, 1, TINY)
    with pytest.raises(ValueError, match="input_dims"):
        build_model({}, 3, TINY)
    with pytest.raises(ValueError, match="reserved"):
        build_model({"length": 4}, 3, TINY)
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({"filters": 3})


# ------------------------------------------------------------------ gradients flow
def test_tiny_model_overfits_separable_problem():
    rng = np.random.default_rng(5)
    n, time_steps, dim, classes = 48, 16, 4, 3
    labels = np.arange(n) % classes
    lengths = rng.integers(6, time_steps + 1, size=n).astype(np.int32)
    centres = rng.normal(size=(classes, dim)).astype(np.float32) * 1.5
    x = rng.normal(size=(n, time_steps, dim)).astype(np.float32) + centres[labels][:, None]
    for i, length in enumerate(lengths):
        x[i, length:] = 0.0
    config = dataclasses.replace(PRESETS["light"], filter_size=8, dilation_size=4, n_heads=2,
                                 head_units=(32, 16), dropout=0.0, head_dropout=0.0)
    model = build_model({"MFCC": dim}, classes, config)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    inputs = {"MFCC": x, "length": lengths}
    history = model.fit(inputs, labels, batch_size=16, epochs=12, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    accuracy = (model.predict(inputs, verbose=0).argmax(1) == labels).mean()
    assert accuracy >= 0.9
