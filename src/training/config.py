"""Run configuration: every flag of `src.training.main` in one dataclass, saved as config.json.

The CLI turns argv into a `RunConfig`; the training and evaluation functions take a RunConfig and
never look at argv, so tests and sweeps build configs directly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# The one list of flags that do not change what is trained (paths, display, hardware,
# bookkeeping): out of the run id, of a sweep configuration's identity and of the configuration
# columns of the analysis; `export.training_command` keeps the hardware ones.
BOOKKEEPING = frozenset({"visualize", "test_path", "audio", "output", "features_root",
                         "results_root", "models_root", "run_id", "overwrite", "verbose",
                         "distribute", "threads", "jit", "folds", "tensorboard", "config"})
HARDWARE = frozenset({"distribute", "threads", "jit", "folds"})
# Flags that only `--mode train-lmmd` reads.
ADAPTATION_ONLY = frozenset({"target_data", "da_method", "lmmd_weight", "kernel_mul",
                             "kernel_num", "fix_sigma", "pseudo_label", "confidence",
                             "domain_norm", "label_map", "da_warmup", "collapse_guard",
                             "target_entropy", "select_epoch"})
# The mode is the run id's prefix (`default_run_id`), not part of its hash.
_NOT_IN_RUN_ID = BOOKKEEPING | {"mode"}
# Default target of each corpus in cross-corpus modes.
OTHER_CORPUS = {"EMODB": "RAVDESS", "RAVDESS": "EMODB"}
# Flags added after runs were published: left out of the run id while at their default, so the
# ids (and resumable runs) made before they existed stay the same.
_IN_RUN_ID_WHEN_SET = {"time_masks", "freq_masks", "time_mask_width", "freq_mask_width",
                       "head_units", "da_warmup", "balanced_batches", "mixup",
                       "collapse_guard", "model", "mlp_units", "mlp_dropout", "C",
                       "frame_pooling", "target_entropy", "select_epoch",
                       "lr_schedule", "level_weights", "fold_seed"}


@dataclasses.dataclass
class RunConfig:
    mode: str = "train"
    data: str = "EMODB"
    feature_type: str = "MFCC"
    fusion_streams: str = "MFCC,LogMel"
    feature_set: str = ""
    preset: str = "default"
    # model family: tcn (temporal network; fused when utterance-level streams are in FUSION),
    # mlp (Keras, utterance vectors), svm / logreg (scikit-learn pipelines)
    model: str = "tcn"
    mlp_units: str = "256,128"
    mlp_dropout: float = 0.3
    C: float = 1.0
    frame_pooling: str = "none"
    # optimisation (seed defaults)
    epoch: int = 300
    batch_size: int = 32
    balanced_batches: bool = False
    mixup: float = 0.0
    lr: float = 3e-4
    lr_schedule: str = "cosine"
    beta1: float = 0.93
    beta2: float = 0.98
    min_lr: float = 1e-6
    clipnorm: float = 1.0
    label_smoothing: float = 0.1
    patience: int = 10
    monitor: str = "val_loss"
    # model (seed defaults; `preset` may override the architecture ones)
    dropout: float = 0.4
    activation: str = "relu"
    filter_size: int = 128
    dilation_size: int = 8
    kernel_size: int = 3
    stack_size: int = 3
    block: str = "residual"
    level_weights: str = "softmax"
    use_dtpm: bool = True
    use_attention: bool = True
    time_masks: int = 0
    freq_masks: int = 0
    time_mask_width: float = 0.1
    freq_mask_width: float = 0.15
    head_units: str = "1024,512"
    # protocol
    protocol: str = "kfold"
    split_fold: int = 10
    fold_seed: int = 42
    loso_groups: int = 0
    val_policy: str = "train_split"
    val_fraction: float = 0.1
    max_folds: int = 0
    folds: str = ""
    random_seed: int = 46
    max_frames: int = 0
    speaker_norm: bool = False
    # domain adaptation
    target_data: str = ""
    da_method: str = "lmmd"
    lmmd_weight: float = 0.5
    da_warmup: int = 0
    collapse_guard: bool = True
    target_entropy: float = 0.0
    select_epoch: str = "last"
    kernel_mul: float = 2.0
    kernel_num: int = 5
    fix_sigma: float = 0.0
    pseudo_label: str = "soft"
    confidence: float = 0.0
    domain_norm: bool = False
    label_set: str = ""
    label_map: str = ""
    # paths and bookkeeping
    test_path: str = ""
    audio: tuple[str, ...] = ()
    output: str = ""
    features_root: str = str(REPO_ROOT / "data" / "features")
    results_root: str = str(REPO_ROOT / "results")
    models_root: str = str(REPO_ROOT / "saved_models")
    run_id: str = ""
    overwrite: bool = False
    visualize: bool = False
    tensorboard: bool = False
    config: str = ""
    verbose: int = 1
    threads: int = 0
    distribute: str = "none"
    mixed_precision: bool = False
    jit: bool = False

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["audio"] = list(self.audio)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        if "audio" in values:
            values["audio"] = tuple(values["audio"])
        return cls(**values)

    def feature_hashes(self, streams: list[str]) -> dict[str, str]:
        """--feature_set as {stream: hash}: "HASH" or "h1,h2" (in stream order) or
        "MFCC=h1,LogMel=h2"; empty when not given (the store then picks the default set)."""
        if not self.feature_set:
            return {}
        items = [s.strip() for s in self.feature_set.split(",") if s.strip()]
        if all("=" in item for item in items):
            return dict(item.split("=", 1) for item in items)
        if len(items) == 1:
            return {stream: items[0] for stream in streams}
        return dict(zip(streams, items))

    def label_list(self) -> list[str]:
        """--label_set as class names: split on commas, spaces around each stripped, empty
        items dropped ("angry, sad," -> ["angry", "sad"]); [] when not given. Raises ValueError
        naming the flag when a label is listed twice. The one parser of --label_set."""
        labels = [item.strip() for item in self.label_set.split(",") if item.strip()]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"--label_set lists {', '.join(repeated)} more than once; got "
                             f"{self.label_set!r}")
        return labels

    def head_sizes(self) -> tuple[int, ...]:
        """--head_units as Dense sizes: "1024,512" -> (1024, 512); "none" -> () (softmax on
        the pooled features). Raises ValueError naming the flag on anything else."""
        if self.head_units.strip().lower() in ("", "none", "0"):
            return ()
        return _positive_sizes("head_units", self.head_units, " or none")

    def mlp_sizes(self) -> tuple[int, ...]:
        """--mlp_units as Dense sizes: "256,128" -> (256, 128); ValueError naming the flag."""
        return _positive_sizes("mlp_units", self.mlp_units)

    def fold_numbers(self) -> tuple[int, ...]:
        """--folds as 1-based fold numbers: "3,5" -> (3, 5); "2-4" -> (2, 3, 4); "" -> () (all).
        Raises ValueError naming the flag on anything else."""
        text = self.folds.replace(" ", "")
        if not text:
            return ()
        error = ValueError(f"--folds must be fold numbers from 1, separated by commas or as "
                           f"ranges (3,5 or 2-4); got {self.folds!r}")
        numbers: list[int] = []
        for item in filter(None, text.split(",")):
            first, _, last = item.partition("-")
            try:
                numbers.extend(range(int(first), int(last or first) + 1))
            except ValueError:
                raise error from None
        if not numbers or min(numbers) < 1:
            raise error
        return tuple(sorted(set(numbers)))

    def run_hash(self) -> str:
        """8 hex digits over the flags that change the trained models."""
        relevant = {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_RUN_ID
                    and not is_late_flag_at_default(k, v)}
        return hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:8]

    def default_run_id(self) -> str:
        prefix = "lmmd" if self.mode == "train-lmmd" else self.protocol
        target = f"-to-{self.target_data}" if self.mode == "train-lmmd" else ""
        return f"{self.data}{target}-{self.feature_type}-{prefix}-{self.run_hash()}"


def _positive_sizes(flag: str, text: str, alternative: str = "") -> tuple[int, ...]:
    """Comma-separated positive integers ("1024,512" -> (1024, 512)); ValueError naming --flag."""
    try:
        sizes = tuple(int(item) for item in text.strip().split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--{flag} must be positive integers separated by commas"
                         f"{',' + alternative if alternative else ''}; got {text!r}")
    return sizes


def is_late_flag_at_default(name: str, value: Any) -> bool:
    """True for a flag added after runs were published, at its default: such flags stay out of
    run ids and configuration keys, so older runs match new ones made at the defaults."""
    return name in _IN_RUN_ID_WHEN_SET and value == _FIELD_DEFAULTS[name]


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
