"""Run configuration: every flag of `src.training.main` in one dataclass, saved as config.json.

The CLI turns argv into a `RunConfig`; the training and evaluation functions take a RunConfig and
never look at argv, so tests and sweeps build configs directly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from src.training.flags import DEFAULTS, REPO_ROOT, RunFlags, names_where  # noqa: F401

# The run settings are declared once, with their metadata, in src.training.flags; the sets below
# are derived from it.
# Flags that do not change what is trained (paths, display, hardware, bookkeeping): out of the
# run id, of a sweep configuration's identity and of the configuration columns of the analysis;
# `export.training_command` keeps the hardware ones.
BOOKKEEPING = names_where("identity", "never")
HARDWARE = names_where("hardware", True)
# Flags that only `--mode train-lmmd` reads.
ADAPTATION_ONLY = names_where("group", "adaptation")
# The mode is the run id's prefix (`default_run_id`), not part of its hash.
_NOT_IN_RUN_ID = BOOKKEEPING | names_where("identity", "prefix")
# Default target of each corpus in cross-corpus modes.
OTHER_CORPUS = {"EMODB": "RAVDESS", "RAVDESS": "EMODB"}
# Flags added after runs were published: left out of the run id while at their default, so the
# ids (and resumable runs) made before they existed stay the same.
_IN_RUN_ID_WHEN_SET = names_where("identity", "when_set")


@dataclasses.dataclass
class RunConfig(RunFlags):
    """Every setting of a run (fields and their metadata: src.training.flags.RunFlags)."""

    def to_dict(self) -> dict[str, Any]:
        """{field: value}, JSON/YAML-ready (audio as a list)."""
        values = dataclasses.asdict(self)
        values["audio"] = list(self.audio)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """A RunConfig from flat {field: value}; keys that are not fields are ignored."""
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

    def vtlp_factors(self) -> tuple[float, ...]:
        """--vtlp as warp factors: "0.9,1.1" -> (0.9, 1.1); () when not given. Raises
        ValueError naming the flag on a factor outside [0.7, 1.3], 1, or a repeat."""
        try:
            factors = tuple(float(item) for item in self.vtlp.split(",") if item.strip())
        except ValueError:
            raise ValueError(f"--vtlp takes a comma list of warp factors such as 0.9,1.1; got "
                             f"{self.vtlp!r}") from None
        if any(not 0.7 <= f <= 1.3 or f == 1.0 for f in factors) or \
                len(set(factors)) < len(factors):
            raise ValueError(f"--vtlp factors must be distinct, in [0.7, 1.3] and not 1; got "
                             f"{self.vtlp!r}")
        return factors

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
    return name in _IN_RUN_ID_WHEN_SET and value == DEFAULTS[name]
