"""Local (class-conditional) and global Maximum Mean Discrepancy losses.

LMMD follows Deep Subdomain Adaptation Network (Zhu et al., 2020, "Deep Subdomain Adaptation
Network for Image Classification", IEEE TNNLS) and its reference code:

    LMMD = (1 / C_valid) * sum_{i,j} [ ws_ij k(s_i, s_j) + wt_ij k(t_i, t_j) - 2 wst_ij k(s_i, t_j) ]

with ws = Ws Ws^T, wt = Wt Wt^T, wst = Ws Wt^T, where column c of Ws (ns, C) is the source
one-hot column normalised to sum to 1 over the batch and column c of Wt (nt, C) is the target
(pseudo-)label column normalised the same way; columns of classes that are not present in both
batches are zeroed and C_valid counts the classes that remain. k is a sum of Gaussian kernels
with bandwidths spread geometrically around the mean pairwise squared distance.

Differences from the reference code: a class counts as present in the target batch when its
(soft or hard) target column sums to more than 0, rather than when it is some sample's argmax;
hard pseudo-labels can be filtered by a confidence threshold.

Shapes: source features (ns, D), target features (nt, D), source_onehot (ns, C),
target_probs (nt, C); ns and nt may differ; C comes from the label tensors.
"""
from __future__ import annotations

import math

import tensorflow as tf

PSEUDO_LABEL_MODES = ("soft", "hard")
_EPS = 1e-12

__all__ = ["pairwise_sq_dists", "gaussian_kernel", "class_weights", "lmmd_loss", "mmd_loss",
           "adaptation_lambda", "PSEUDO_LABEL_MODES"]


def pairwise_sq_dists(x):
    """x (n, D) -> (n, n) squared Euclidean distances, clipped at 0 with an exact-zero diagonal."""
    x = tf.convert_to_tensor(x)
    sq = tf.reduce_sum(tf.square(x), axis=1)
    dists = sq[:, None] + sq[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True)
    dists = tf.maximum(dists, tf.zeros_like(dists))
    return tf.linalg.set_diag(dists, tf.zeros_like(sq))


def _check_kernel_args(kernel_mul, kernel_num):
    if kernel_num < 1:
        raise ValueError(f"kernel_num must be >= 1, got {kernel_num!r}")
    if kernel_mul <= 0:
        raise ValueError(f"kernel_mul must be > 0, got {kernel_mul!r}")


def gaussian_kernel(source, target, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
    """Multi-bandwidth Gaussian kernel matrix over the concatenated samples.

    Args:
        source: (ns, D) features; target: (nt, D) features (same dtype).
        kernel_mul: ratio between consecutive bandwidths.
        kernel_num: number of Gaussians summed.
        fix_sigma: if given, the base bandwidth (instead of the data-dependent one).
    Returns:
        (ns + nt, ns + nt) matrix sum_i exp(-||a - b||^2 / (base * kernel_mul**i)), where
        base = mean off-diagonal squared distance / kernel_mul**(kernel_num // 2). The
        bandwidth is treated as a constant for gradients (tf.stop_gradient).
    """
    _check_kernel_args(kernel_mul, kernel_num)
    total = tf.concat([source, target], axis=0)
    dists = pairwise_sq_dists(total)
    dtype = dists.dtype
    if fix_sigma is not None:
        bandwidth = tf.cast(fix_sigma, dtype)
    else:
        n = tf.cast(tf.shape(total)[0], dtype)
        pairs = tf.where(n > 1.0, n * n - n, tf.ones_like(n))
        bandwidth = tf.stop_gradient(tf.reduce_sum(dists)) / pairs
    bandwidth = tf.maximum(bandwidth, tf.cast(_EPS, dtype))
    bandwidth = bandwidth / tf.cast(kernel_mul ** (kernel_num // 2), dtype)
    kernels = [tf.exp(-dists / (bandwidth * tf.cast(kernel_mul ** i, dtype)))
               for i in range(kernel_num)]
    return tf.add_n(kernels)


def class_weights(source_onehot, target_probs, pseudo_label="soft", confidence=0.0):
    """LMMD sample-pair weights.

    Args:
        source_onehot: (ns, C) one-hot source labels.
        target_probs: (nt, C) predicted target class probabilities.
        pseudo_label: "soft" uses the probabilities; "hard" uses one-hot argmax, dropping
            samples whose max probability is below `confidence`.
        confidence: threshold for "hard" pseudo-labels (ignored for "soft").
    Returns:
        ws (ns, ns), wt (nt, nt), wst (ns, nt) float weights (no gradient) and n_valid, the
        number of classes present in the source batch whose target column sum is > 0 (float).
    """
    if pseudo_label not in PSEUDO_LABEL_MODES:
        raise ValueError(f"unknown pseudo_label {pseudo_label!r}; expected one of "
                         f"{PSEUDO_LABEL_MODES}")
    source = tf.stop_gradient(tf.convert_to_tensor(source_onehot))
    target = tf.stop_gradient(tf.convert_to_tensor(target_probs))
    if not source.dtype.is_floating:
        source = tf.cast(source, tf.float32)
    target = tf.cast(target, source.dtype)
    if pseudo_label == "hard":
        n_classes = tf.shape(target)[1]
        keep = tf.cast(tf.reduce_max(target, axis=1) >= confidence, target.dtype)
        target = tf.one_hot(tf.argmax(target, axis=1), n_classes, dtype=target.dtype)
        target = target * keep[:, None]
    source_sum = tf.reduce_sum(source, axis=0, keepdims=True)  # (1, C)
    target_sum = tf.reduce_sum(target, axis=0, keepdims=True)
    valid = tf.cast((source_sum > 0) & (target_sum > 0), source.dtype)  # (1, C)
    source_w = tf.math.divide_no_nan(source, source_sum) * valid  # (ns, C)
    target_w = tf.math.divide_no_nan(target, target_sum) * valid  # (nt, C)
    ws = tf.matmul(source_w, source_w, transpose_b=True)
    wt = tf.matmul(target_w, target_w, transpose_b=True)
    wst = tf.matmul(source_w, target_w, transpose_b=True)
    return ws, wt, wst, tf.reduce_sum(valid)


def lmmd_loss(source_features, target_features, source_onehot, target_probs, kernel_mul=2.0,
              kernel_num=5, fix_sigma=None, pseudo_label="soft", confidence=0.0):
    """Local MMD between source (ns, D) and target (nt, D) features -> scalar.

    Gradients flow to the features only (label weights and bandwidth are constants). Returns 0
    when no class is present in both batches; never NaN.
    """
    source_features = tf.convert_to_tensor(source_features)
    target_features = tf.cast(target_features, source_features.dtype)
    ns = tf.shape(source_features)[0]
    kernels = gaussian_kernel(source_features, target_features, kernel_mul, kernel_num,
                              fix_sigma)
    ws, wt, wst, n_valid = class_weights(source_onehot, target_probs, pseudo_label, confidence)
    dtype = kernels.dtype
    ws, wt, wst, n_valid = (tf.cast(v, dtype) for v in (ws, wt, wst, n_valid))
    k_ss = kernels[:ns, :ns]
    k_tt = kernels[ns:, ns:]
    k_st = kernels[:ns, ns:]
    loss = tf.reduce_sum(ws * k_ss) + tf.reduce_sum(wt * k_tt) - 2.0 * tf.reduce_sum(wst * k_st)
    return loss / tf.maximum(n_valid, tf.ones_like(n_valid))


def mmd_loss(source, target, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
    """Global (biased) MMD^2: mean K_ss + mean K_tt - 2 mean K_st -> scalar."""
    source = tf.convert_to_tensor(source)
    target = tf.cast(target, source.dtype)
    ns = tf.shape(source)[0]
    kernels = gaussian_kernel(source, target, kernel_mul, kernel_num, fix_sigma)
    return (tf.reduce_mean(kernels[:ns, :ns]) + tf.reduce_mean(kernels[ns:, ns:])
            - 2.0 * tf.reduce_mean(kernels[:ns, ns:]))


def adaptation_lambda(progress, gamma=10.0):
    """DANN/DSAN ramp 2 / (1 + exp(-gamma * progress)) - 1, from 0 (progress 0) towards 1.

    Accepts Python numbers (returns a float) or tensors (returns a tensor).
    """
    if isinstance(progress, (int, float)) and not isinstance(progress, bool):
        return 2.0 / (1.0 + math.exp(-gamma * float(progress))) - 1.0
    progress = tf.convert_to_tensor(progress)
    if not progress.dtype.is_floating:
        progress = tf.cast(progress, tf.float32)
    return 2.0 / (1.0 + tf.exp(-tf.cast(gamma, progress.dtype) * progress)) - 1.0
