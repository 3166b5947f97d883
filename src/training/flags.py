"""The run settings, declared once: every field of RunConfig with its default, help text, group
and whether it is part of the run identity.

`src.training.main.build_parser` generates the command line from these declarations, the
config files (`--config FILE`, the run.yaml saved with every run) are grouped by `GROUPS`, and
`src.training.config` derives the sets of bookkeeping, hardware and adaptation-only flags and
the run-id rules from the metadata. A field is declared with `flag(default, group, help, ...)`:

    identity  "always"   part of the run id's hash (the default)
              "when_set" part of it only when it differs from its default: flags added after
                         runs were published, so ids (and resumable runs) made before stay put
              "never"    bookkeeping (paths, display, hardware): out of the run id, of a sweep
                         configuration's identity and of the analysis' configuration columns
              "prefix"   only the run id's prefix (--mode), not its hash
    hardware  bookkeeping kept in the exported training command (`export.training_command`)
    cli       False for a setting without a command-line flag (min_lr)

Booleans whose default is False are on/off switches (`--speaker_norm`); booleans whose default
is True take a value (`--collapse_guard false`). The flags a --preset sets have no command-line
default of their own (see src.training.presets).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

from src.data_processing.config import FEATURE_TYPES, FUSION


REPO_ROOT = Path(__file__).resolve().parents[2]
MODES = ("train", "test", "predict", "train-lmmd", "test-cross-corpus")
# The --preset names (their values: src.training.presets, which imports this module).
PRESET_NAMES = ("default", "light", "timnet")
IDENTITIES = ("always", "when_set", "never", "prefix")
# Group name (a key of the nested config files) -> title of its --help section.
GROUPS = {"run": "run", "input": "data and features", "architecture": "model",
          "optimisation": "optimisation", "evaluation": "protocol",
          "adaptation": "domain adaptation (--mode train-lmmd)", "paths": "paths and output",
          "hardware": "hardware"}


def flag(default: Any, group: str, help: str = "", *, identity: str = "always",
         choices: tuple | None = None, metavar: str | None = None, hardware: bool = False,
         nargs: str | None = None, cli: bool = True) -> Any:
    """A RunConfig field: `default` plus the metadata the command line, the config files and
    the run id are derived from (see the module docstring)."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected one of {tuple(GROUPS)}")
    if identity not in IDENTITIES:
        raise ValueError(f"unknown identity {identity!r}; expected one of {IDENTITIES}")
    return dataclasses.field(default=default, metadata={
        "group": group, "help": help, "identity": identity, "choices": choices,
        "metavar": metavar, "hardware": hardware, "nargs": nargs, "cli": cli})


_ROOT = "root folder of "


@dataclasses.dataclass
class RunFlags:
    """Every setting of a run (one command-line flag each, except min_lr)."""

    mode: str = flag("train", "run", "what to do", identity="prefix", choices=MODES)
    data: str = flag("EMODB", "input", "corpus: EMODB, RAVDESS or a CSV corpus name")
    feature_type: str = flag("MFCC", "input", "feature stream(s) to train on",
                             choices=FEATURE_TYPES + (FUSION,))
    fusion_streams: str = flag("MFCC,LogMel", "input", "streams of FUSION, comma separated")
    feature_set: str = flag("", "input", "feature-set hash(es) to train on when several "
                            "extraction settings exist: HASH, or MFCC=h1,LogMel=h2 (default: the "
                            "default-settings set)")
    preset: str = flag("default", "run", "default values of the model and schedule flags: "
                       "default (the seed's: 128 filters, kernel 3, 3 stacks, residual blocks, "
                       "dropout 0.4, attention, DTPM, 1024/512 head, cosine decay), light "
                       "(TIM-Net sized network, 39 filters, kernel 2, 1 stack, gated blocks, "
                       "dropout 0.1, with attention, DTPM and head; ~13x faster on CPU) or timnet "
                       "(TIM-Net exactly: linear level weights, no attention/DTPM/head, Adam 1e-3 "
                       "constant, batch 64, 500 epochs, last epoch, no validation split; use "
                       "features extracted with run_data_processing --preset timnet)",
                       choices=PRESET_NAMES)
    model: str = flag("tcn", "architecture", "tcn: the temporal network (frame-level input; "
                      "with utterance-level streams in FUSION, the fused model); mlp: Keras MLP "
                      "over one vector per utterance; svm / logreg: scikit-learn pipelines "
                      "(scaler + class-balanced classifier) over the same vectors",
                      identity="when_set", choices=("tcn", "mlp", "svm", "logreg"))
    mlp_units: str = flag("256,128", "architecture", "--model mlp: hidden Dense sizes; the last "
                          "is the embedding", identity="when_set")
    mlp_dropout: float = flag(0.3, "architecture", "--model mlp: dropout after each hidden "
                              "layer", identity="when_set")
    C: float = flag(1.0, "architecture", "--model svm / logreg: inverse regularisation "
                    "strength", identity="when_set")
    frame_pooling: str = flag("none", "architecture", "mlp / svm / logreg on frame-level "
                              "features: mean_std pools each stream to its mean and standard "
                              "deviation over frames (none: utterance-level features only)",
                              identity="when_set", choices=("none", "mean_std"))
    epoch: int = flag(300, "optimisation", "training epochs")
    batch_size: int = flag(32, "optimisation", "training batch size")
    balanced_batches: bool = flag(False, "optimisation", "draw each training epoch "
                                  "class-balanced (with replacement) instead of as a "
                                  "permutation; train-lmmd: the source batches",
                                  identity="when_set")
    mixup: float = flag(0.0, "optimisation", "mix each training file with another of its "
                        "batch, weight ~ Beta(ALPHA, ALPHA) (features and labels; 0 = off, "
                        "0.2-0.4 usual); train-lmmd: the source batches", identity="when_set",
                        metavar="ALPHA")
    vtlp: str = flag("", "optimisation", "add the training files again once per factor (e.g. "
                     "0.9,1.1) with their frequency axis warped by it (vocal tract length "
                     "perturbation of MFCC / LogMel frames; each copy a new speaker for "
                     "--speaker_norm); --mode train", identity="when_set", metavar="FACTORS")
    lr: float = flag(3e-4, "optimisation", "Adam learning rate")
    lr_schedule: str = flag("cosine", "optimisation", "cosine: decay to min_lr over --epoch; "
                            "constant: no decay (TIM-Net).", identity="when_set",
                            choices=("cosine", "constant"))
    beta1: float = flag(0.93, "optimisation", "Adam beta_1")
    beta2: float = flag(0.98, "optimisation", "Adam beta_2")
    min_lr: float = flag(1e-6, "optimisation", "end of the cosine decay", cli=False)
    clipnorm: float = flag(1.0, "optimisation", "clip each gradient to this norm (0 = off).")
    weight_decay: float = flag(0.0, "optimisation", "decoupled weight decay of Adam (AdamW: "
                               "each step shrinks every weight by lr x this; 0 = off).",
                               identity="when_set")
    label_smoothing: float = flag(0.1, "optimisation", "of the (source) cross-entropy (0 for "
                                  "the MLP with LMMD: smoothed, less confident target "
                                  "predictions blur the class-conditional weights).")
    weight_ema: float = flag(0.0, "optimisation", "end training on an exponential moving "
                             "average of the weights (decay per step, e.g. 0.99: about the "
                             "last 100 steps) instead of the last step's weights; 0 = off. "
                             "Needs --patience 0 (the fixed-schedule, last-epoch protocol)",
                             identity="when_set", metavar="DECAY")
    init_from: str = flag("", "optimisation", "continue training from a finished run's fold "
                          "models (a saved_models/... or test_models/... run folder): each fold "
                          "starts from the weights of the same fold there, whose split must be "
                          "this fold's; --epoch more epochs follow (the optimizer starts afresh)",
                          identity="when_set", metavar="RUN_DIR")
    patience: int = flag(10, "optimisation", "early-stopping patience in epochs (0 = off, the "
                         "last epoch is kept).")
    monitor: str = flag("val_loss", "optimisation", "quantity early stopping watches",
                        choices=("val_loss", "val_accuracy"))
    dropout: float = flag(0.4, "architecture", "dropout of the temporal network")
    activation: str = flag("relu", "architecture", "activation of the temporal blocks")
    filter_size: int = flag(128, "architecture", "filters of each temporal block")
    dilation_size: int = flag(8, "architecture", "temporal blocks per stack (dilations 1, 2, "
                              "4, ...)")
    kernel_size: int = flag(3, "architecture", "kernel size of the temporal convolutions")
    stack_size: int = flag(3, "architecture", "stacks of temporal blocks")
    block: str = flag("residual", "architecture", "temporal block: residual sum (seed) or "
                      "sigmoid gate (TIM-Net).", choices=("residual", "gated"))
    level_weights: str = flag("softmax", "architecture", "weights of the temporal levels: "
                              "softmax (sum to 1) or linear (unconstrained, TIM-Net).",
                              identity="when_set", choices=("softmax", "linear"))
    use_dtpm: bool = flag(True, "architecture", "dynamic temporal pyramid pooling",
                          metavar="{true,false}")
    use_attention: bool = flag(True, "architecture", "attention over the temporal levels",
                               metavar="{true,false}")
    time_masks: int = flag(0, "architecture", "SpecAugment: frame spans masked per utterance "
                           "in training (0 = off)", identity="when_set")
    freq_masks: int = flag(0, "architecture", "SpecAugment: feature-channel bands masked per "
                           "utterance (0 = off)", identity="when_set")
    time_mask_width: float = flag(0.1, "architecture", "largest time span, as a fraction of the "
                                  "utterance's frames", identity="when_set")
    freq_mask_width: float = flag(0.15, "architecture", "largest band, as a fraction of the "
                                  "feature channels", identity="when_set")
    head_units: str = flag("1024,512", "architecture", "Dense sizes of the classifier head, "
                           "comma separated; none = softmax straight on the pooled features, "
                           "as in TIM-Net.", identity="when_set")
    protocol: str = flag("kfold", "evaluation", "kfold: shuffled k-fold; loso: leave speakers "
                         "out", choices=("kfold", "loso"))
    split_fold: int = flag(10, "evaluation", "number of folds of --protocol kfold")
    fold_seed: int = flag(42, "evaluation", "kfold: random_state of the shuffled KFold "
                          "(TIM-Net's code: 46).", identity="when_set")
    loso_groups: int = flag(0, "evaluation", "loso: group speakers into this many folds (0 = "
                            "one speaker per fold)")
    val_policy: str = flag("train_split", "evaluation", "test_fold reproduces the published "
                           "protocol (optimistic)", choices=("train_split", "test_fold"))
    val_fraction: float = flag(0.1, "evaluation", "share of the training folds held out for "
                               "early stopping and model selection; 0 = none, train on all of "
                               "them (needs --patience 0).")
    max_folds: int = flag(0, "evaluation", "run only the first N folds (quick checks)")
    folds: str = flag("", "evaluation", "train only these folds (3,5 or 2-4; 1-based), e.g. to "
                      "share a run's folds among processes or machines; the report covers every "
                      "fold of the run finished so far", identity="never", hardware=True,
                      metavar="LIST")
    random_seed: int = flag(46, "evaluation", "seed of weights, batches and the validation "
                            "split")
    max_frames: int = flag(0, "input", "centre-crop utterances longer than this many frames "
                           "(0 = keep all)")
    speaker_norm: bool = flag(False, "input", "standardise each speaker's features with that "
                              "speaker's own mean and variance (train, test and target "
                              "corpora; predict: each file alone)")
    target_data: str = flag("", "adaptation", "target corpus (default: the other of EMODB and "
                            "RAVDESS)")
    da_method: str = flag("lmmd", "adaptation", "domain loss",
                          choices=("lmmd", "mmd", "dann", "none"))
    lmmd_weight: float = flag(0.5, "adaptation", "weight of the domain loss")
    da_warmup: int = flag(0, "adaptation", "epochs of source-only training before the domain "
                          "loss ramps up", identity="when_set")
    collapse_guard: bool = flag(True, "adaptation", "with --patience 0: stop and restore the "
                                "last healthy epoch when the source training accuracy collapses",
                                identity="when_set", metavar="{true,false}")
    target_entropy: float = flag(0.0, "adaptation", "weight of the mean entropy of target "
                                 "predictions added to the loss (entropy minimisation, ramped "
                                 "like the domain term; 0 = off)", identity="when_set")
    select_epoch: str = flag("last", "adaptation", "train-lmmd with --patience 0: keep the last "
                             "epoch, or the epoch with the best label-free score (source "
                             "validation accuracy x balance of the target predictions; no "
                             "target label is read)", identity="when_set",
                             choices=("last", "label_free"))
    select_C: str = flag("fixed", "adaptation", "train-lmmd with --model svm / logreg: use --C "
                         "(fixed), or fit C in (1, 0.1, ..., 1e-5) and keep the one whose "
                         "target predictions have the most balanced class mix (label_free; no "
                         "target label is read)", identity="when_set",
                         choices=("fixed", "label_free"))
    self_training: int = flag(0, "adaptation", "train-lmmd: rounds of class-balanced "
                              "self-training after the first fit; round r of R trains again "
                              "with the share r/(R+1) of the target added as pseudo-labelled "
                              "files, each class its most confident ones (0 = off; no target "
                              "label is read)", identity="when_set", metavar="ROUNDS")
    st_teacher: str = flag("self", "adaptation", "with --self_training: the model whose "
                           "predictions give round 1's pseudo-labels: the run's own model "
                           "(self), or a logreg / svm on the same utterance-level features "
                           "with --select_C label_free; later rounds fit the run's model",
                           identity="when_set", choices=("self", "logreg", "svm"))
    kernel_mul: float = flag(2.0, "adaptation", "ratio of the bandwidths of the Gaussian "
                             "kernels")
    kernel_num: int = flag(5, "adaptation", "number of Gaussian kernels")
    fix_sigma: float = flag(0.0, "adaptation", "fixed kernel bandwidth (0 = from the data)")
    lmmd_targets: str = flag("model", "adaptation", "where the target class weights of LMMD "
                             "come from: the adapted model's own predictions, step by step "
                             "(model, DSAN), or a teacher: a logreg with the label-free C "
                             "fitted on the same training files, its target predictions fixed "
                             "through the fit (utterance-level features; no target label is "
                             "read)", identity="when_set", choices=("model", "teacher"))
    pseudo_label: str = flag("soft", "adaptation", "target class weights of LMMD",
                             choices=("soft", "hard"))
    confidence: float = flag(0.0, "adaptation", "hard pseudo-labels: ignore target "
                             "predictions less confident than this")
    domain_norm: bool = flag(False, "adaptation", "standardise each corpus with its own "
                             "statistics")
    label_set: str = flag("", "input", "comma list of labels to keep (e.g. "
                          "angry,fear,happy,neutral,sad)")
    label_map: str = flag("", "adaptation", "JSON file {\"from\": \"to\", ...} of label "
                          "renames applied to both corpora")
    test_path: str = flag("", "paths", "test / predict / test-cross-corpus: folder of "
                          "the saved run",
                          identity="never")
    audio: tuple[str, ...] = flag((), "paths", "predict: audio files or folders",
                                  identity="never", nargs="+")
    output: str = flag("", "paths", "predict: write the table to this CSV", identity="never")
    features_root: str = flag(str(REPO_ROOT / "data" / "features"), "paths",
                              _ROOT + "the extracted features", identity="never")
    results_root: str = flag(str(REPO_ROOT / "results"), "paths", _ROOT + "reports and "
                             "metrics", identity="never")
    models_root: str = flag(str(REPO_ROOT / "saved_models"), "paths", _ROOT + "trained models",
                            identity="never")
    run_id: str = flag("", "paths", "name of the run (default: corpus, features, protocol and "
                       "a hash of the settings)", identity="never")
    overwrite: bool = flag(False, "paths", "start the run afresh", identity="never")
    visualize: bool = flag(False, "paths", "extra plots (training curves per fold; "
                           "train-lmmd: embeddings of both corpora)",
                           identity="never")
    tensorboard: bool = flag(False, "paths", "write Keras TensorBoard logs per fold "
                             "(<run>/fold_XX/tensorboard)", identity="never")
    config: str = flag("", "run", "YAML or TOML file of flag values, flat ({flag: value}) or "
                       "grouped by the sections below ({optimisation: {lr: 0.001}}), e.g. the "
                       "run.yaml saved with every run; flags on the command line override it",
                       identity="never", metavar="FILE")
    verbose: int = flag(1, "paths", "Keras verbosity (0, 1 or 2)", identity="never")
    threads: int = flag(0, "hardware", "TensorFlow threads (0 = all cores)", identity="never",
                        hardware=True)
    distribute: str = flag("none", "hardware", "tf.distribute strategy: mirrored = all GPUs of "
                           "this machine, multi_worker = several machines described by "
                           "TF_CONFIG. --batch_size is the global batch (split over replicas); "
                           "--lr is not rescaled", identity="never", hardware=True,
                           choices=("none", "mirrored", "multi_worker"))
    mixed_precision: bool = flag(False, "hardware", "float16 compute with float32 weights "
                                 "(GPUs; slow on CPU)")
    jit: bool = flag(False, "hardware", "compile train steps with XLA (GPUs)",
                     identity="never", hardware=True)


FIELDS = {f.name: f for f in dataclasses.fields(RunFlags)}
DEFAULTS = {name: f.default for name, f in FIELDS.items()}


def names_where(key: str, value: Any) -> frozenset[str]:
    """Names of the fields whose metadata `key` equals `value`."""
    return frozenset(name for name, f in FIELDS.items() if f.metadata[key] == value)


def is_switch(name: str) -> bool:
    """True for an on/off flag (`--speaker_norm`): a boolean field whose default is False."""
    return FIELDS[name].default is False


def flag_name(key: Any) -> str:
    """A flag as written in a config file ("--batch-size", "batch_size") -> the field name."""
    return str(key).lstrip("-").replace("-", "_")


def flat_items(values: dict) -> Iterator[tuple[str, Any]]:
    """(name, value) of a config mapping, flat ({flag: value}) or nested by group
    ({group: {flag: value}}), names normalised with `flag_name`. ValueError on a group that is
    not a mapping or a flag given twice."""
    seen: set[str] = set()
    for key, value in values.items():
        name = flag_name(key)
        if name in GROUPS:
            if not isinstance(value, dict):
                raise ValueError(f"group {name!r} must be a mapping of flags to values")
            inner = [(flag_name(k), v) for k, v in value.items()]
        else:
            inner = [(name, value)]
        for inner_name, inner_value in inner:
            if inner_name in seen:
                raise ValueError(f"flag {inner_name!r} is given twice")
            seen.add(inner_name)
            yield inner_name, inner_value


def nested(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{flag: value} -> {group: {flag: value}} in GROUPS order, flags in declaration order;
    names that are not fields are dropped."""
    groups: dict[str, dict[str, Any]] = {}
    for name, f in FIELDS.items():
        if name in values:
            groups.setdefault(f.metadata["group"], {})[name] = values[name]
    return {group: groups[group] for group in GROUPS if group in groups}
