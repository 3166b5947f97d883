"""Atomic file writes: an output appears under its final name complete, or not at all.

Each writer writes to a temporary file in the same folder, flushes it to disk and renames it over
the target (`os.replace` is atomic on POSIX), so an interrupted run never leaves a half-written
.npy, .json, .csv or workbook under its final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds.

    The rename alone makes the write atomic against a killed process; `durable` also fsyncs the
    data first, which survives a power cut but costs a disk flush per file.

    `suffix` ends the temporary name with an extension that a writer insists on (openpyxl wants
    `.xlsx`, Keras `.keras`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix,
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path: str | os.PathLike, array: np.ndarray, durable: bool = True) -> None:
    """Write `array` as .npy atomically (see `atomic_path` for `durable`)."""
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite_or_none(data), indent=2, sort_keys=True,
                                  default=_json_default, allow_nan=False))


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _finite_or_none(value: Any) -> Any:
    """Replace NaN/Inf floats by None so the JSON stays strict (e.g. recall of an absent class)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, np.floating):
        return _finite_or_none(float(value))
    if isinstance(value, np.ndarray):
        return _finite_or_none(value.tolist())
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
