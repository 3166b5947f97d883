"""Process-pool workers of the extraction pipeline (pipeline.py): start-up, per-file
extraction, memory tuning.

`_init_worker` sets a worker process up (dies with its parent, keeps its heap, one BLAS
thread, warm FFT plans), `_process_file` turns one audio file into its feature arrays on disk,
`_mp_context` picks the start method of the pool; `_one_blas_thread` and `_warm_up` prepare the
caller's process (files processed in-process, workers forked from it).
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np

from src.utils.io import save_npy

from . import smile
from .audio import AudioError, condition, read_audio
from .config import ExtractionConfig
from .features import SPECTRAL_FEATURES, extract_arrays, extract_spectral, mel_basis

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - comes with scikit-learn
    threadpool_limits = None

# per-process state set by _init_worker: the config, the set folders, the BLAS limit
_STATE: dict = {}


def _tune_worker_memory() -> None:
    """Keep freed heap memory in this worker instead of handing it back to the OS.

    Each file allocates a few hundred kB of arrays; with glibc's defaults they are mmap'ed and
    unmapped per file, and on virtual machines the page faults that follow cost more than the
    FFTs. Raising the mmap/trim thresholds makes the worker reuse its heap (about 3x faster on
    the development VM). Only done in worker processes, never in the caller's process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 64 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _exit_with_parent() -> None:
    """Make this worker die quietly with its parent: a parent killed by SIGKILL cannot stop
    its pool, and orphaned workers would print a BrokenPipe traceback on their next result.
    Linux: the kernel sends SIGTERM when the parent exits; elsewhere nothing changes."""
    try:
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6").prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (OSError, AttributeError):  # not Linux/glibc
        return
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # died before prctl took effect
        os._exit(0)


def _init_worker(config: ExtractionConfig, dirs: dict[str, str], in_worker: bool) -> None:
    """Per-process setup; `in_worker` is False when files are processed in the caller's process,
    whose memory and thread settings are then left alone."""
    if in_worker:
        _exit_with_parent()
        _tune_worker_memory()
        if threadpool_limits is not None:
            _STATE["limits"] = threadpool_limits(1)  # one BLAS thread per worker process
    _STATE["config"] = config
    _STATE["dirs"] = {name: Path(path) for name, path in dirs.items()}
    mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
    if in_worker:  # warm up the heap and the FFT plans once instead of on the first files
        warm = np.zeros(config.sample_rate * 30, dtype=np.float32)
        warm[::97] = 0.1
        extract_spectral(warm, config, SPECTRAL_FEATURES)


def _process_file(task: tuple[str, str, tuple[str, ...]]):
    """Worker: one file -> arrays written atomically. Returns (file_id, reason|None, frames,
    seconds)."""
    file_id, path, features = task
    config: ExtractionConfig = _STATE["config"]
    try:
        raw, rate = read_audio(path)
        seconds = len(raw) / rate
        y = condition(raw, rate, config)
        arrays = extract_arrays(y, config, features)
        for name in features:
            # rename-atomic without a per-file fsync (half the extraction time); the set's
            # COMPLETE marker is written durably once every array is in place
            save_npy(_STATE["dirs"][name] / f"{file_id}.npy", arrays[name], durable=False)
        return file_id, None, {name: arrays[name].shape[0] for name in features}, seconds
    except AudioError as exc:
        return file_id, str(exc), {}, 0.0
    except OSError as exc:
        return file_id, f"I/O error: {exc}", {}, 0.0
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        return file_id, f"{type(exc).__name__}: {exc}", {}, 0.0


def _mp_context():
    """fork when safe (fast start, nothing re-imported); forkserver once threaded runtimes
    such as torch or tensorflow are loaded in this process."""
    methods = multiprocessing.get_all_start_methods()
    threaded = any(name in sys.modules for name in ("torch", "tensorflow", "jax"))
    if "fork" in methods and not threaded:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _one_blas_thread():
    """Temporarily one BLAS thread: the small mel products are slower multi-threaded, badly so
    when the cores are busy."""
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _warm_up(config: ExtractionConfig, names) -> None:
    """Import librosa's spectral code and build the filterbank (and openSMILE's extractors)
    once in this process, so forked workers inherit them instead of each paying ~1 s of imports
    (not counted in `seconds`)."""
    extract_spectral(np.full(max(config.n_fft, config.win_length), 0.1, dtype=np.float32),
                     config, [n for n in names if n in SPECTRAL_FEATURES] or ["MFCC"])
    for name in names:  # GE2E (torch) loads in each worker: forking after torch is unsafe
        if name in smile.SMILE_SETS:
            smile.smile_extractor(name, config.smile_level)
