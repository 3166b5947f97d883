"""LMMD / MMD losses, adaptation ramp and gradient reversal, checked against NumPy references."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from src.models.domain import GradientReversal, build_domain_classifier
from src.models.lmmd_loss import (
    adaptation_lambda,
    class_weights,
    gaussian_kernel,
    lmmd_loss,
    mmd_loss,
    pairwise_sq_dists,
)


# ------------------------------------------------------------------ NumPy references (loops)
def np_kernel(source, target, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
    total = np.concatenate([source, target]).astype(np.float64)
    n = len(total)
    dists = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dists[i, j] = np.sum((total[i] - total[j]) ** 2)
    if fix_sigma is not None:
        bandwidth = fix_sigma
    else:
        bandwidth = dists.sum() / (n * n - n)
    bandwidth /= kernel_mul ** (kernel_num // 2)
    return sum(np.exp(-dists / (bandwidth * kernel_mul ** i)) for i in range(kernel_num))


def np_lmmd(xs, xt, ys, pt, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
    """Per-class form: mean over valid classes c of MMD^2 between the class-c weighted
    source and target distributions."""
    ns = len(xs)
    k = np_kernel(xs, xt, kernel_mul, kernel_num, fix_sigma)
    kss, ktt, kst = k[:ns, :ns], k[ns:, ns:], k[:ns, ns:]
    total, valid = 0.0, 0
    for c in range(ys.shape[1]):
        s_col, t_col = ys[:, c].astype(np.float64), pt[:, c].astype(np.float64)
        if s_col.sum() == 0 or t_col.sum() == 0:
            continue
        valid += 1
        a, b = s_col / s_col.sum(), t_col / t_col.sum()
        total += a @ kss @ a + b @ ktt @ b - 2 * a @ kst @ b
    return total / max(valid, 1)


def np_mmd(xs, xt, **kwargs):
    ns = len(xs)
    k = np_kernel(xs, xt, **kwargs)
    return k[:ns, :ns].mean() + k[ns:, ns:].mean() - 2 * k[:ns, ns:].mean()


def random_probs(rng, n, c):
    logits = rng.normal(size=(n, c)) * 2
    p = np.exp(logits)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def onehot(labels, c):
    return np.eye(c, dtype=np.float32)[labels]


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    ns, nt, c, d = 9, 6, 5, 7
    xs = rng.normal(size=(ns, d)).astype(np.float32)
    xt = (rng.normal(size=(nt, d)) + 0.5).astype(np.float32)
    labels = np.array([0, 1, 1, 3, 0, 3, 3, 1, 0])  # classes 2 and 4 absent from the source
    return xs, xt, onehot(labels, c), random_probs(rng, nt, c)


# ------------------------------------------------------------------ kernels
def test_pairwise_sq_dists_matches_numpy():
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    expected = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    got = pairwise_sq_dists(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(np.diag(got) == 0) and np.all(got >= 0)


@pytest.mark.parametrize("fix_sigma", [None, 3.0])
def test_gaussian_kernel_matches_numpy(fix_sigma):
    rng = np.random.default_rng(2)
    xs, xt = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 1
    got = gaussian_kernel(xs.astype(np.float32), xt.astype(np.float32), fix_sigma=fix_sigma)
    assert got.shape == (9, 9)
    np.testing.assert_allclose(got.numpy(), np_kernel(xs, xt, fix_sigma=fix_sigma),
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ LMMD
def test_lmmd_matches_numpy_reference(problem):
    xs, xt, ys, pt = problem
    got = float(lmmd_loss(xs, xt, ys, pt))
    assert got > 0
    np.testing.assert_allclose(got, np_lmmd(xs, xt, ys, pt), rtol=1e-5, atol=1e-5)
    got = float(lmmd_loss(xs, xt, ys, pt, kernel_mul=1.5, kernel_num=3, fix_sigma=2.0))
    np.testing.assert_allclose(
        got, np_lmmd(xs, xt, ys, pt, kernel_mul=1.5, kernel_num=3, fix_sigma=2.0),
        rtol=1e-5, atol=1e-5)


def test_class_weights_shapes_and_valid_count(problem):
    xs, xt, ys, pt = problem
    ws, wt, wst, n_valid = class_weights(ys, pt)
    assert ws.shape == (9, 9) and wt.shape == (6, 6) and wst.shape == (9, 6)
    assert float(n_valid) == 3.0  # classes 0, 1, 3
    # each valid class contributes total weight 1 to ws, wt and wst
    np.testing.assert_allclose([float(tf.reduce_sum(w)) for w in (ws, wt, wst)], [3, 3, 3],
                               rtol=1e-5)


def test_lmmd_near_zero_for_identical_sets():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    labels = onehot(np.array([0, 1, 2, 0, 1, 2, 0, 1]), 3)
    assert abs(float(lmmd_loss(x, x.copy(), labels, labels.copy()))) < 1e-5


@pytest.mark.parametrize("fix_sigma", [None, 4.0])
def test_lmmd_grows_with_mean_shift(fix_sigma):
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), 4)
    centres = rng.normal(size=(3, 6)) * 3
    xs = (centres[labels] + 0.3 * rng.normal(size=(12, 6))).astype(np.float32)
    xt_base = (centres[labels] + 0.3 * rng.normal(size=(12, 6))).astype(np.float32)
    direction = np.ones(6, np.float32) / np.sqrt(6)
    ys = onehot(labels, 3)
    losses = [float(lmmd_loss(xs, xt_base + shift * direction, ys, ys, fix_sigma=fix_sigma))
              for shift in (0.0, 0.5, 1.0, 2.0, 3.0)]
    assert all(b > a for a, b in zip(losses, losses[1:])), losses


def test_lmmd_ignores_classes_absent_from_source(problem):
    xs, xt, ys, pt = problem
    assert ys[:, 2].sum() == 0
    base = float(lmmd_loss(xs, xt, ys, pt))
    more = pt.copy()
    more[:, 2] += np.linspace(0.5, 3.0, len(pt)).astype(np.float32)
    assert float(lmmd_loss(xs, xt, ys, more)) == pytest.approx(base, abs=1e-6)
    # whereas changing the target mass of a present class does change it
    changed = pt.copy()
    changed[:, 1] += np.linspace(0.5, 3.0, len(pt)).astype(np.float32)
    assert abs(float(lmmd_loss(xs, xt, ys, changed)) - base) > 1e-4


def _assert_finite_loss_and_grads(xs, xt, ys, pt, **kwargs):
    xs, xt = tf.constant(xs), tf.constant(xt)
    with tf.GradientTape() as tape:
        tape.watch([xs, xt])
        loss = lmmd_loss(xs, xt, ys, pt, **kwargs)
    grads = tape.gradient(loss, [xs, xt])
    assert np.isfinite(float(loss))
    for g in grads:
        assert g is None or np.all(np.isfinite(g.numpy()))
    return float(loss)


def test_lmmd_no_nan_for_tiny_or_degenerate_batches():
    rng = np.random.default_rng(5)
    x1 = rng.normal(size=(1, 4)).astype(np.float32)
    # one sample per domain, same class
    _assert_finite_loss_and_grads(x1, x1 + 1, onehot([0], 3), onehot([0], 3))
    # identical points: zero bandwidth
    _assert_finite_loss_and_grads(x1, x1.copy(), onehot([0], 3), onehot([0], 3))
    # no class shared between source and (hard) target labels
    loss = _assert_finite_loss_and_grads(x1, x1 + 1, onehot([0], 3), onehot([2], 3),
                                         pseudo_label="hard")
    assert loss == 0.0
    # no source labels at all
    loss = _assert_finite_loss_and_grads(rng.normal(size=(3, 4)).astype(np.float32),
                                         rng.normal(size=(2, 4)).astype(np.float32),
                                         np.zeros((3, 3), np.float32),
                                         random_probs(rng, 2, 3))
    assert loss == 0.0
    # a single sample overall (n = 1 bandwidth guard) through the kernel directly
    assert np.all(np.isfinite(gaussian_kernel(x1, x1[:0]).numpy()))


def test_lmmd_gradients_flow_to_features_not_to_probs(problem):
    xs, xt, ys, pt = (tf.constant(v) for v in problem)
    with tf.GradientTape() as tape:
        tape.watch([xs, xt, pt])
        loss = lmmd_loss(xs, xt, ys, pt)
    g_xs, g_xt, g_pt = tape.gradient(loss, [xs, xt, pt])
    assert g_pt is None or float(tf.reduce_max(tf.abs(g_pt))) == 0.0
    assert float(tf.reduce_max(tf.abs(g_xs))) > 0 and float(tf.reduce_max(tf.abs(g_xt))) > 0


def test_hard_pseudo_labels_drop_low_confidence_samples(problem):
    xs, xt, ys, _ = problem
    pt = np.array([[0.9, 0.05, 0.02, 0.02, 0.01],
                   [0.1, 0.8, 0.05, 0.05, 0.0],
                   [0.4, 0.3, 0.1, 0.2, 0.0],     # low confidence (argmax 0)
                   [0.05, 0.05, 0.05, 0.85, 0.0],
                   [0.2, 0.45, 0.1, 0.25, 0.0],   # low confidence (argmax 1)
                   [0.7, 0.1, 0.1, 0.1, 0.0]], np.float32)
    keep = pt.max(1) >= 0.6
    hard = onehot(pt.argmax(1), 5) * keep[:, None]
    got = float(lmmd_loss(xs, xt, ys, pt, pseudo_label="hard", confidence=0.6))
    np.testing.assert_allclose(got, np_lmmd(xs, xt, ys, hard), rtol=1e-5, atol=1e-5)
    no_threshold = float(lmmd_loss(xs, xt, ys, pt, pseudo_label="hard", confidence=0.0))
    np.testing.assert_allclose(no_threshold, np_lmmd(xs, xt, ys, onehot(pt.argmax(1), 5)),
                               rtol=1e-5, atol=1e-5)
    assert abs(got - no_threshold) > 1e-4


def test_bad_pseudo_label_mode_raises(problem):
    xs, xt, ys, pt = problem
    with pytest.raises(ValueError, match="pseudo_label"):
        lmmd_loss(xs, xt, ys, pt, pseudo_label="sharp")
    with pytest.raises(ValueError, match="kernel_num"):
        gaussian_kernel(xs, xt, kernel_num=0)


# ------------------------------------------------------------------ MMD and ramp
def test_mmd_matches_numpy():
    rng = np.random.default_rng(6)
    xs, xt = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.7
    for kwargs in ({}, {"kernel_mul": 3.0, "kernel_num": 2, "fix_sigma": 1.5}):
        got = float(mmd_loss(xs.astype(np.float32), xt.astype(np.float32), **kwargs))
        np.testing.assert_allclose(got, np_mmd(xs, xt, **kwargs), rtol=1e-5, atol=1e-5)


def test_adaptation_lambda():
    assert adaptation_lambda(0.0) == 0.0
    expected = 2.0 / (1.0 + math.exp(-10.0)) - 1.0
    assert adaptation_lambda(1.0) == pytest.approx(expected, rel=1e-12)
    assert adaptation_lambda(0.5, gamma=4.0) == pytest.approx(2 / (1 + math.exp(-2.0)) - 1)
    tensor = adaptation_lambda(tf.constant([0.0, 1.0]))
    np.testing.assert_allclose(tensor.numpy(), [0.0, expected], rtol=1e-6)


# ------------------------------------------------------------------ gradient reversal
def test_gradient_reversal_flips_and_scales_gradient():
    layer = GradientReversal(scale=1.0)
    x = tf.constant(np.random.default_rng(7).normal(size=(3, 4)).astype(np.float32))
    upstream = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4))
    for scale in (1.0, 0.25):
        layer.set_scale(scale)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            objective = tf.reduce_sum(y * upstream)
        np.testing.assert_allclose(y.numpy(), x.numpy())
        np.testing.assert_allclose(tape.gradient(objective, x).numpy(), -scale * upstream.numpy(),
                                   rtol=1e-6)
    layer.scale.assign(2.0)
    assert float(layer.scale.numpy()) == 2.0
    clone = GradientReversal.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, GradientReversal)


def test_domain_classifier_outputs_one_logit():
    clf = build_domain_classifier(12, hidden=8)
    out = clf(np.zeros((5, 12), np.float32))
    assert out.shape == (5, 1)
    with pytest.raises(ValueError, match="input_dim"):
        build_domain_classifier(0)
