"""scikit-learn utterance-level classifiers (`--model svm|logreg`) and their safe file format.

Both are `Pipeline(StandardScaler, classifier)` over one vector per utterance
(`src.training.data.utterance_matrix`), with class-balanced weights:
    logreg: LogisticRegression(C, class_weight="balanced", max_iter=5000, lbfgs)
    svm:    CalibratedClassifierCV(SVC(kernel="rbf", gamma="scale", C,
                                       class_weight="balanced"), ensemble=False, cv=3)
(the SVM's probabilities are Platt-scaled on 3-fold cross-validated decision values, then one SVC
is fitted on all the data, as libsvm's `probability=True` did before scikit-learn deprecated
it; predictions are the argmax of the probabilities, so both always agree).

Models are saved with skops (`.skops`), which rebuilds the objects from a description instead
of unpickling, so loading a file cannot run arbitrary code; `load_classic` accepts only types
from scikit-learn and NumPy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from src.utils.io import atomic_path

CLASSIC_MODELS = ("svm", "logreg")
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.")


def build_classic(kind: str, C: float = 1.0, seed: int = 0):
    """Unfitted scikit-learn pipeline of `kind` ("svm" or "logreg")."""
    from sklearn.calibration import CalibratedClassifierCV  # heavy: sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if kind == "logreg":
        classifier = LogisticRegression(C=C, class_weight="balanced", max_iter=5000,
                                        random_state=seed)
    elif kind == "svm":
        classifier = CalibratedClassifierCV(
            SVC(C=C, kernel="rbf", gamma="scale", class_weight="balanced", random_state=seed),
            ensemble=False, cv=3)
    else:
        raise ValueError(f"unknown classic model {kind!r}; expected one of {CLASSIC_MODELS}")
    return Pipeline([("scale", StandardScaler()), ("classify", classifier)])


def full_proba(pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) probabilities, with zero columns for classes absent from training."""
    out = np.zeros((len(x), n_classes), dtype=np.float32)
    out[:, pipeline.classes_.astype(int)] = pipeline.predict_proba(x)
    return out


def save_classic(pipeline, path: str | Path) -> None:
    """Write `pipeline` to `path` in skops format (atomic: temporary file, then rename)."""
    import skops.io  # heavy: skops

    with atomic_path(Path(path), suffix=".skops") as tmp:
        skops.io.dump(pipeline, tmp)


def load_classic(path: str | Path):
    """Read a pipeline written by `save_classic`; ValueError when the file names a type outside
    scikit-learn / NumPy (skops would otherwise have to be told to trust it)."""
    import skops.io  # heavy: skops

    untrusted = skops.io.get_untrusted_types(file=str(path))
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise ValueError(f"{path}: refuses to load types outside scikit-learn/NumPy: "
                         f"{', '.join(foreign)}")
    return skops.io.load(str(path), trusted=untrusted)
