"""One interface for every model family (`--model tcn|mlp|svm|logreg`):

    estimator = make_estimator(cfg, class_names)
    history, epoch_seconds = estimator.fit(train, val, seed, fold_dir)   # SERData in
    probs = estimator.predict_proba(data)        # (N, n_classes)
    vectors = estimator.embed(data)               # (N, E) the representation before the softmax
    estimator.save(fold_dir); load_estimator(fold_dir, n_classes)

as scikit-learn estimators share fit / predict_proba. Fold loops, reports, test / predict /
test-cross-corpus talk to this interface only; the adaptation trainer wraps a Keras estimator's
`model`. Files: fold_dir/model.keras (Keras families) or fold_dir/model.skops (scikit-learn).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from src.models.classic import build_classic, full_proba, load_classic, save_classic
from src.training.callbacks import predicted_mix_balance
from src.training.config import RunConfig
from src.training.data import (DataError, SERData, model_scaling, normalisation_stats,
                               utterance_matrix)
from src.training.fitting import (compile_model, fit_model, model_config_from, predict_probs,
                                  save_model)

KERAS_MODELS = ("tcn", "mlp")
CLASSIC_MODELS = ("svm", "logreg")
MODEL_FAMILIES = KERAS_MODELS + CLASSIC_MODELS
MODEL_FILES = ("model.keras", "model.skops")


def check_model_input(cfg: RunConfig, data: SERData) -> None:
    """DataError naming --model and --feature_type when the features do not fit the model:
    tcn needs a frame-level stream; mlp / svm / logreg take frame-level streams only with
    --frame_pooling mean_std (mean and std over frames)."""
    if cfg.model == "tcn" and not data.frame_streams:
        raise DataError(f"--model tcn needs frame-level features, but --feature_type "
                        f"{cfg.feature_type} ({', '.join(data.streams)}) is one vector per "
                        f"utterance: use --model mlp, svm or logreg (or extract --smile_level lld)")
    if cfg.model != "tcn" and data.frame_streams and cfg.frame_pooling == "none":
        raise DataError(f"--model {cfg.model} takes one vector per utterance, but --feature_type "
                        f"{cfg.feature_type} has frame-level stream(s) "
                        f"{', '.join(data.frame_streams)}: add --frame_pooling mean_std, or use "
                        f"--model tcn")


class KerasEstimator:
    """tcn (temporal network, fused with utterance streams when present) or mlp."""

    uses_validation = True  # early stopping / model selection on a validation split

    def __init__(self, cfg: RunConfig | None, class_names: list[str], model=None):
        self.cfg, self.class_names, self.model = cfg, list(class_names), model

    def build(self, train: SERData, normalise: bool = True):
        """Build (not train) the Keras model for `train`'s streams; standardisation statistics
        come from `train` unless `normalise` is False (--domain_norm data is standardised)."""
        from src.models.mlp import build_mlp  # heavy: tensorflow
        from src.models.model import build_model  # heavy: tensorflow

        n_classes = len(self.class_names)
        if self.cfg.model == "mlp":
            vectors = utterance_matrix(train)
            stats = model_scaling(vectors) if normalise else None
            self.model = build_mlp(train.input_dims, n_classes, train.utterance_streams,
                                   self.cfg.mlp_sizes(), self.cfg.mlp_dropout, norm_stats=stats)
        else:
            self.model = build_model(train.input_dims, n_classes, model_config_from(self.cfg),
                                     norm_stats=normalisation_stats(train) if normalise else None,
                                     utterance_streams=train.utterance_streams)
        return self.model

    def fit(self, train: SERData, val: SERData | None, seed: int,
            fold_dir: Path | None = None) -> tuple[dict, list[float]]:
        """Build and compile unless done (`build` inside a distribution scope), then train;
        returns (history, seconds of each epoch)."""
        if self.model is None:
            self.build(train)
        if not self.model.compiled:
            compile_model(self.model, self.cfg, int(np.ceil(train.n / self.cfg.batch_size)))
        return fit_model(self.model, train, val, self.cfg, seed, fold_dir)

    def predict_proba(self, data: SERData) -> np.ndarray:
        return predict_probs(self.model, data)

    def embed(self, data: SERData) -> np.ndarray:
        """(N, E) output of the layer "embedding"."""
        import keras  # heavy: keras

        embedder = keras.Model(self.model.inputs, self.model.get_layer("embedding").output)
        return predict_probs(embedder, data)

    def save(self, fold_dir: Path) -> None:
        save_model(self.model, Path(fold_dir) / "model.keras")

    @classmethod
    def load(cls, fold_dir: Path, class_names: list[str]) -> "KerasEstimator":
        import keras  # heavy: keras

        import src.models.model  # noqa: F401  registers the custom layers; heavy: tensorflow

        return cls(None, class_names, keras.models.load_model(Path(fold_dir) / "model.keras"))


# Inverse regularisation strengths `--select_C label_free` chooses from.
LABEL_FREE_C_GRID = (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5)


class ClassicEstimator:
    """svm / logreg: a scikit-learn pipeline over `utterance_matrix` vectors."""

    uses_validation = False  # nothing to stop early: trained on every training-fold file

    def __init__(self, cfg: RunConfig | None, class_names: list[str], pipeline=None):
        self.cfg, self.class_names, self.pipeline = cfg, list(class_names), pipeline

    def fit(self, train: SERData, val: SERData | None, seed: int,
            fold_dir: Path | None = None) -> tuple[dict, list[float]]:
        """Fit on `train` (validation data is not needed); returns ({}, [])."""
        self.pipeline = build_classic(self.cfg.model, self.cfg.C, seed)
        self.pipeline.fit(utterance_matrix(train), train.labels)
        return {}, []

    def fit_label_free(self, train: SERData, target: SERData, seed: int) -> dict:
        """`--select_C label_free`: fit one pipeline per C of LABEL_FREE_C_GRID on `train` and
        keep the one whose predictions on `target` (labels never read) have the most balanced
        class mix (`predicted_mix_balance`; the larger C wins a tie). Returns {"C": [...],
        "balance": [...], "selected_C": C}, stored in the fold's result.json."""
        vectors, target_vectors = utterance_matrix(train), utterance_matrix(target)
        pipelines, scores = [], []
        for C in LABEL_FREE_C_GRID:
            pipelines.append(build_classic(self.cfg.model, C, seed).fit(vectors, train.labels))
            scores.append(predicted_mix_balance(
                full_proba(pipelines[-1], target_vectors, len(self.class_names))))
        best = int(np.argmax(scores))  # the first maximum: the larger C wins a tie
        self.pipeline = pipelines[best]
        return {"C": list(LABEL_FREE_C_GRID), "balance": scores,
                "selected_C": LABEL_FREE_C_GRID[best]}

    def predict_proba(self, data: SERData) -> np.ndarray:
        return full_proba(self.pipeline, utterance_matrix(data), len(self.class_names))

    def embed(self, data: SERData) -> np.ndarray:
        """(N, D) the standardised input vectors (the pipeline before its classifier)."""
        return self.pipeline[:-1].transform(utterance_matrix(data)).astype(np.float32)

    def save(self, fold_dir: Path) -> None:
        Path(fold_dir).mkdir(parents=True, exist_ok=True)
        save_classic(self.pipeline, Path(fold_dir) / "model.skops")

    @classmethod
    def load(cls, fold_dir: Path, class_names: list[str]) -> "ClassicEstimator":
        return cls(None, class_names, load_classic(Path(fold_dir) / "model.skops"))


def make_estimator(cfg: RunConfig, class_names: list[str]):
    """An unfitted estimator of family `cfg.model`."""
    if cfg.model in KERAS_MODELS:
        return KerasEstimator(cfg, class_names)
    if cfg.model in CLASSIC_MODELS:
        return ClassicEstimator(cfg, class_names)
    raise DataError(f"--model {cfg.model!r}: use one of {', '.join(MODEL_FAMILIES)}")


def load_estimator(fold_dir: Path, class_names: list[str]):
    """The estimator saved in `fold_dir` (model.keras or model.skops)."""
    if (Path(fold_dir) / "model.skops").is_file():
        return ClassicEstimator.load(fold_dir, class_names)
    return KerasEstimator.load(fold_dir, class_names)
