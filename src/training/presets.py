"""Run presets: named sets of flag values (architecture and training schedule), applied once.

A flag a preset sets has no default of its own on the command line (argparse default None);
`resolve` fills every such flag left unset with the preset's value, else RunConfig's (seed)
default. Order of precedence: command line > --config file > preset > seed default.

Presets:
    default  the seed's design: 128 filters, kernel 3, 3 stacks of 8 residual blocks, softmax
             level weights, attention, DTPM, 1024/512 head; Adam 3e-4 with cosine decay.
    light    ours for CPUs: TIM-Net's temporal network (39 filters, kernel 2, one stack of 8
             gated blocks, dropout 0.1) with attention, DTPM and the head kept; seed schedule.
    timnet   TIM-Net exactly (Jiaxin-Ye/TIM-Net_SER defaults): the light network with linear
             level weights and the softmax straight on the weighted pooled levels, no attention,
             DTPM or head; Adam 1e-3 without decay or clipping, batch 64, 500 epochs, label
             smoothing 0.1, the last epoch kept, trained on all training folds (no validation
             split), KFold(shuffle, random_state=46). Pair it with the extraction preset of
             the same name (`run_data_processing --preset timnet`: 39 MFCCs at 22.05 kHz of
             signals padded or cropped to a fixed length).
"""
from __future__ import annotations

from typing import Any

from src.training.flags import PRESET_NAMES as NAMES
from src.training.flags import RunFlags
# Flags a preset's ModelConfig decides (RunConfig field = ModelConfig field, head_units as text).
MODEL_FLAGS = ("filter_size", "dilation_size", "kernel_size", "stack_size", "dropout", "block",
               "level_weights", "use_dtpm", "use_attention", "head_units")
# Schedule values of each preset (flags not listed keep the seed default).
SCHEDULES: dict[str, dict[str, Any]] = {
    "default": {},
    "light": {},
    "timnet": {"lr": 1e-3, "lr_schedule": "constant", "clipnorm": 0.0, "batch_size": 64,
               "epoch": 500, "patience": 0, "label_smoothing": 0.1, "val_fraction": 0.0,
               "fold_seed": 46},
}
SCHEDULE_FLAGS = tuple(sorted({name for values in SCHEDULES.values() for name in values}))
# Every flag whose default comes from --preset.
PRESET_FLAGS = MODEL_FLAGS + SCHEDULE_FLAGS


def preset_values(name: str) -> dict[str, Any]:
    """{flag: value} of preset `name` for every flag in PRESET_FLAGS (seed defaults where the
    preset says nothing). ValueError for an unknown preset."""
    from src.models.model import PRESETS  # heavy: tensorflow

    if name not in NAMES:
        raise ValueError(f"unknown preset {name!r}; expected one of {NAMES}")
    model = PRESETS[name]
    seed = RunFlags()
    values = {flag: getattr(seed, flag) for flag in SCHEDULE_FLAGS}
    values.update(SCHEDULES[name])
    for flag in MODEL_FLAGS:
        value = getattr(model, flag)
        if flag == "head_units":
            value = ",".join(str(units) for units in value) or "none"
        values[flag] = value
    return values


def resolve(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (parsed flags; None = not given) with every unset preset flag filled from the
    preset named by values["preset"]."""
    defaults = preset_values(values.get("preset") or "default")
    return {**values, **{flag: defaults[flag] for flag in PRESET_FLAGS
                         if values.get(flag) is None}}
