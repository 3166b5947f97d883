"""The Keras model that trains a classifier with a domain-adaptation term.

Each training step takes a labelled source batch (xs, ys) and an unlabelled target batch xt:

    loss = CE(ys, p_s) + weight * lambda(step) * D(e_s, e_t)            (lmmd, mmd)
    loss = CE(ys, p_s) + weight * BCE(domain(GRL_lambda(e)))             (dann)
    loss = CE(ys, p_s)                                                   (none)
         + target_entropy * lambda(step) * mean_i H(p_t,i)               (optional, any method)

e = the classifier's layer "embedding", p = its softmax output (LMMD's target class weights,
or, when the target batches carry them, a teacher's fixed probabilities q_t: xt is then
(x_t, q_t)); lambda(step) = 0 during the
warm-up steps, then 2 / (1 + exp(-10 p)) - 1 over the remaining steps' progress p (DANN/DSAN).
D is `DOMAIN_LOSSES[method]`. Target labels never enter: the target input is features only.
The entropy term (Grandvalet & Bengio 2005; used with DSAN-style alignment in many SER
cross-corpus papers) pushes target predictions away from class boundaries.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from src.models.domain import GradientReversal, build_domain_classifier
from src.models.lmmd_loss import adaptation_lambda, lmmd_loss, mmd_loss

__all__ = ["DomainAdaptationTrainer", "DA_METHODS"]


def _lmmd(trainer, es, et, ys, pt, lam):
    return lmmd_loss(es, et, ys, pt, kernel_mul=trainer.kernel_mul, kernel_num=trainer.kernel_num,
                     fix_sigma=trainer.fix_sigma, pseudo_label=trainer.pseudo_label,
                     confidence=trainer.confidence)


def _mmd(trainer, es, et, ys, pt, lam):
    return mmd_loss(es, et, kernel_mul=trainer.kernel_mul, kernel_num=trainer.kernel_num,
                    fix_sigma=trainer.fix_sigma)


def _dann(trainer, es, et, ys, pt, lam):
    """Domain classifier loss through a gradient-reversal layer scaled by lambda."""
    trainer.reversal.scale.assign(lam)
    logits = trainer.discriminator(trainer.reversal(tf.concat([es, et], axis=0)))
    domains = tf.concat([tf.ones_like(es[:, :1]), tf.zeros_like(et[:, :1])], axis=0)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(domains, logits))


DOMAIN_LOSSES = {"lmmd": _lmmd, "mmd": _mmd, "dann": _dann, "none": None}
DA_METHODS = tuple(DOMAIN_LOSSES)


def mean_entropy(probs):
    """Mean Shannon entropy (nats) of the rows of probs (n, C)."""
    return -tf.reduce_mean(tf.reduce_sum(probs * tf.math.log(probs + 1e-8), axis=1))


@keras.saving.register_keras_serializable(package="ser")
class DomainAdaptationTrainer(keras.Model):
    """Wraps (and trains) `classifier`, a functional model with a layer named "embedding".

    Args: method (lmmd | mmd | dann | none), weight of the domain term, total_steps and
    warmup_steps of the lambda schedule, label_smoothing of the source cross-entropy, the
    kernel settings and pseudo-label mode of LMMD/MMD, target_entropy (weight of the target
    entropy term, 0 = off). `fit` takes ((x_source, y_source), x_target) batches; validation
    batches are (x, y) of the source. Only `classifier` is saved (the trainer is a fitting aid).
    """

    def __init__(self, classifier, method="lmmd", weight=0.5, total_steps=1, warmup_steps=0,
                 label_smoothing=0.1, kernel_mul=2.0, kernel_num=5, fix_sigma=None,
                 pseudo_label="soft", confidence=0.0, target_entropy=0.0, **kwargs):
        super().__init__(**kwargs)
        if method not in DOMAIN_LOSSES:
            raise ValueError(f"unknown adaptation method {method!r}; expected one of "
                             f"{DA_METHODS}")
        self.classifier, self.method, self.weight = classifier, method, float(weight)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.label_smoothing, self.kernel_mul = float(label_smoothing), float(kernel_mul)
        self.kernel_num, self.fix_sigma = int(kernel_num), fix_sigma
        self.pseudo_label, self.confidence = pseudo_label, float(confidence)
        self.target_entropy = float(target_entropy)
        self.embedder = keras.Model(classifier.inputs, [classifier.get_layer("embedding").output,
                                                        classifier.output])
        self.ce = keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)
        self.step = tf.Variable(0.0, trainable=False, dtype="float32")
        if method == "dann":
            self.reversal = GradientReversal()
            self.discriminator = build_domain_classifier(
                classifier.get_layer("embedding").output.shape[-1])
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "cls_loss", "da_loss", "lambda", "target_entropy")}
        self.acc = keras.metrics.CategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [*self.trackers.values(), self.acc]

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    def ramp(self):
        """lambda at the current step (0 during warm-up)."""
        span = float(max(1, self.total_steps - self.warmup_steps))
        progress = tf.clip_by_value((self.step - float(self.warmup_steps)) / span, 0.0, 1.0)
        return adaptation_lambda(progress)

    def train_step(self, data):
        (xs, ys), xt = data
        xt, qt = xt if isinstance(xt, tuple) else (xt, None)  # q_t: a teacher's probabilities
        lam = self.ramp()
        domain_loss = DOMAIN_LOSSES[self.method]
        with tf.GradientTape() as tape:
            es, ps = self.embedder(xs, training=True)
            cls_loss = self.ce(ys, ps)
            da_loss, entropy = tf.constant(0.0), tf.constant(0.0)
            if domain_loss is not None or self.target_entropy:
                et, pt = self.embedder(xt, training=True)
                entropy = mean_entropy(pt)
                if domain_loss is not None:
                    da_loss = domain_loss(self, es, et, ys, pt if qt is None else qt, lam)
            # DANN already scales its gradient by lambda in the reversal layer
            scale = self.weight if self.method == "dann" else lam * self.weight
            loss = cls_loss + scale * da_loss + self.target_entropy * lam * entropy
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.step.assign_add(1.0)
        for name, value in (("loss", loss), ("cls_loss", cls_loss), ("da_loss", da_loss),
                            ("lambda", lam), ("target_entropy", entropy)):
            self.trackers[name].update_state(value)
        self.acc.update_state(ys, ps)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        probs = self.classifier(x, training=False)
        self.trackers["loss"].update_state(self.ce(y, probs))
        self.acc.update_state(y, probs)
        return {"loss": self.trackers["loss"].result(), "accuracy": self.acc.result()}

    def get_config(self):
        return {"classifier": keras.saving.serialize_keras_object(self.classifier),
                "method": self.method, "weight": self.weight, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "label_smoothing": self.label_smoothing,
                "kernel_mul": self.kernel_mul, "kernel_num": self.kernel_num,
                "fix_sigma": self.fix_sigma, "pseudo_label": self.pseudo_label,
                "confidence": self.confidence, "target_entropy": self.target_entropy}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
