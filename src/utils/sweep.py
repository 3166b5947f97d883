"""Hyper-parameter sweeps over `python -m src.training.main` (driven by tune-hyperparameter.sh).

    python -m src.utils.sweep [SWEEP_FILE] [--samples N] [--seed S] [-j N] [--dry-run]
                              [--results_root DIR] [-- extra flags for every run]

Sweep files
-----------
A sweep file is a small file in bash syntax (it can be sourced by bash) read by a safe parser
here; nothing in it is executed. Allowed lines:

    # comment
    lr=(3e-4 1e-3)                      # one array per CLI flag of src.training.main (its dest)
    use_dtpm=(true false)               # store_true flags (--domain_norm) take true/false too
    FIXED="--preset light --epoch 30"   # flags given to every configuration
    VARIANTS=(                          # optional: one axis whose values are whole flag strings
      "--feature_type MFCC"             #   (for ablations that are not a Cartesian product)
      "--feature_type FUSION --fusion_streams MFCC,LogMel"
    )

Arrays may span lines. The grid is the Cartesian product of the arrays in file order
(`VARIANTS` counts as one array). Precedence when a flag is given twice: FIXED < arrays and
VARIANTS < the extra flags after `--`.

Configurations
--------------
Each grid point becomes a canonical flag dict: values are converted with the CLI's own types
(so `3e-4` and `0.0003` are the same value), choices are checked, and for `--mode train` the
flags that only matter to `train-lmmd` (target_data, da_method, lmmd_weight, kernel_*, fix_sigma,
pseudo_label, confidence, domain_norm, label_map) are dropped, so grid points that would train the
same model collapse into one configuration. A configuration's identity is the first 8 hex digits
of the sha1 of its sorted flags (paths and display flags -- results_root, models_root,
features_root, verbose, threads -- left out), so it does not depend on flag order.

Running
-------
Each configuration runs `python -m src.training.main <flags> --run_id sweep-<hash> --verbose 0
--threads T` (T = max(1, cores // j)) with stdout/stderr appended to
`<results_root>/sweeps/<sweep>/logs/<hash>.log`. A configuration whose
`<results_root>/sweep-<hash>/metrics.json` exists is skipped, so re-running a sweep resumes it
(training itself also resumes at the first unfinished fold). A failure is recorded in
`failed.txt` (exit code, log) and the sweep goes on. `sweep.json` maps hash -> flags, command,
status (pending | running | done | failed | interrupted; `skipped` true when the last sweep found
it finished), exit code, log, UAR; it is merged across re-runs. Ctrl-C or
SIGTERM forwards SIGINT to the running children (finished folds are kept), waits for them (a
second signal kills them at once), and exits 130 / 143.

A running sweep holds `sweep.lock` (flock): a second driver of the same sweep stops with an error
(exit 2), and the kernel releases the lock when the driver dies, even by SIGKILL. The children run
in their own sessions, so a driver killed with SIGKILL (or by the OOM killer) leaves them running,
still marked `running` in sweep.json; the next run of the sweep stops them first (SIGINT, then
SIGKILL after the grace period) and then resumes, so no configuration trains twice at once.

`SER_SWEEP_PYTHON_MODULE` (or `--runner`) replaces the entry point, for tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SWEEP = REPO_ROOT / "sweeps" / "default.sh"
DEFAULT_MODULE = "src.training.main"

#: Flags that do not change what is trained: left out of a configuration's identity.
NOT_IN_IDENTITY = frozenset({"results_root", "models_root", "features_root", "verbose", "threads",
                             "run_id"})
#: Flags that the sweep sets itself.
RESERVED = frozenset({"run_id"})
#: Flags that only `--mode train-lmmd` reads; dropped from `--mode train` configurations.
DA_ONLY = frozenset({"target_data", "da_method", "lmmd_weight", "kernel_mul", "kernel_num",
                     "fix_sigma", "pseudo_label", "confidence", "domain_norm", "label_map"})
VARIANTS_KEY = "VARIANTS"
FIXED_KEY = "FIXED"
STOP_GRACE_SECONDS = 60.0


class SweepError(Exception):
    """A problem with the sweep file or options: reported as one line, exit code 2."""


# --------------------------------------------------------------------------- parsing

@dataclasses.dataclass
class SweepSpec:
    name: str
    axes: list[tuple[str, list[str]]]      # (key, raw values) in file order; VARIANTS included
    fixed: list[str]                       # flag tokens

    def grid_size(self) -> int:
        size = 1
        for _, values in self.axes:
            size *= len(values)
        return size


def _split_statements(text: str, source: str) -> list[tuple[int, str]]:
    """Cut the file into statements (line number, text): one per line, except that an array
    `name=( ... )` runs to its closing parenthesis outside quotes and comments."""
    statements: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        start = i + 1
        stripped = line.strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        head = stripped.split("=", 1)
        if len(head) == 2 and head[1].startswith("("):
            buffer = stripped
            while not _array_closed(buffer):
                if i >= len(lines):
                    raise SweepError(f"{source}:{start}: array is not closed with ')'")
                buffer += "\n" + lines[i]
                i += 1
            statements.append((start, buffer))
        else:
            statements.append((start, stripped))
    return statements


def _array_closed(text: str) -> bool:
    """True when the `(` after the first `=` is closed (quotes, escapes and comments honoured)."""
    text = strip_comments(text)
    return _closing_paren(text, text.index("(") + 1) >= 0


def strip_comments(text: str) -> str:
    """Drop bash comments: `#` at the start of a word, outside quotes, to the end of the line."""
    out: list[str] = []
    quote = ""
    escaped = False
    comment = False
    for index, ch in enumerate(text):
        if comment:
            if ch == "\n":
                comment = False
                out.append(ch)
            continue
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (index == 0 or text[index - 1].isspace() or text[index - 1] == "("):
            comment = True
            continue
        out.append(ch)
    return "".join(out)


def _closing_paren(text: str, start: int) -> int:
    """Index of the first `)` at or after `start` outside quotes (comments already stripped),
    or -1."""
    quote = ""
    escaped = False
    for index in range(start, len(text)):
        ch = text[index]
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == ")":
            return index
    return -1


def parse_sweep_text(text: str, name: str = "sweep", source: str = "<sweep>") -> SweepSpec:
    """Parse the text of a sweep file (see the module docstring)."""
    axes: list[tuple[str, list[str]]] = []
    fixed: list[str] = []
    seen: set[str] = set()
    for lineno, statement in _split_statements(text, source):
        where = f"{source}:{lineno}"
        statement = strip_comments(statement).strip()
        key, sep, rest = statement.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SweepError(f"{where}: expected name=(values ...) or FIXED=\"flags\", got "
                             f"{statement.splitlines()[0]!r}")
        try:
            if rest.startswith("("):
                close = _closing_index(rest)
                trailing = shlex.split(rest[close + 1:])
                if trailing:
                    raise SweepError(f"{where}: unexpected text after ')': {' '.join(trailing)}")
                values = shlex.split(rest[1:close])
                if key in seen:
                    raise SweepError(f"{where}: {key} is given twice")
                if not values:
                    raise SweepError(f"{where}: {key}=() has no values")
                if key == FIXED_KEY:
                    raise SweepError(f"{where}: FIXED is a string, not an array: "
                                     f"FIXED=\"--flag value ...\"")
                seen.add(key)
                axes.append((key, values))
            elif key == FIXED_KEY:
                if key in seen:
                    raise SweepError(f"{where}: FIXED is given twice")
                seen.add(key)
                words = shlex.split(rest)
                if len(words) > 1:
                    raise SweepError(f"{where}: quote the flags: FIXED=\"--flag value ...\"")
                fixed += shlex.split(words[0]) if words else []
            else:
                raise SweepError(f"{where}: {key}: only arrays name=(v1 v2 ...) and "
                                 f"FIXED=\"...\" are allowed")
        except ValueError as err:  # shlex: unbalanced quotes
            raise SweepError(f"{where}: {err}") from None
    return SweepSpec(name=name, axes=axes, fixed=fixed)


def _closing_index(rest: str) -> int:
    close = _closing_paren(rest, 1)
    if close < 0:
        raise SweepError("array is not closed with ')'")
    return close


def parse_sweep_file(path: str | os.PathLike) -> SweepSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SweepError(f"cannot read sweep file {path}: {err.strerror}") from None
    return parse_sweep_text(text, name=path.stem, source=str(path))


# --------------------------------------------------------------------------- configurations

def _cli_parser() -> argparse.ArgumentParser:
    from src.training.main import build_parser  # light: no TensorFlow import

    return build_parser()


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _canonical_value(action: argparse.Action, raw: str, where: str) -> str:
    flag = action.option_strings[0]
    value: Any = raw
    if action.type is not None:
        try:
            value = action.type(raw)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise SweepError(f"{where}: {flag} {raw!r}: {err}") from None
    if action.choices is not None and value not in action.choices:
        raise SweepError(f"{where}: {flag} {raw!r}: choose from "
                         f"{', '.join(map(str, action.choices))}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def tokens_to_flags(tokens: Sequence[str], actions: dict[str, argparse.Action],
                    where: str) -> dict[str, Any]:
    """argv-style tokens -> {dest: canonical value string, or True for store_true flags}."""
    by_option = {opt: a for a in actions.values() for opt in a.option_strings}
    flags: dict[str, Any] = {}
    i = 0
    tokens = list(tokens)
    while i < len(tokens):
        token = tokens[i]
        option, eq, inline = token.partition("=")
        action = by_option.get(option if option.startswith("--") else token)
        if action is None:
            raise SweepError(f"{where}: {token!r} is not a flag of python -m {DEFAULT_MODULE}")
        i += 1
        if action.nargs == 0:
            if eq:
                raise SweepError(f"{where}: {option} takes no value")
            flags[action.dest] = True
            continue
        if action.nargs == "+":
            values = [inline] if eq else []
            while i < len(tokens) and not tokens[i].startswith("--"):
                values.append(tokens[i])
                i += 1
            if not values:
                raise SweepError(f"{where}: {option} needs a value")
            flags[action.dest] = " ".join(values)
            continue
        if eq:
            raw = inline
        else:
            if i >= len(tokens):
                raise SweepError(f"{where}: {option} needs a value")
            raw = tokens[i]
            i += 1
        flags[action.dest] = _canonical_value(action, raw, where)
    return flags


def axis_value_flags(key: str, raw: str, actions: dict[str, argparse.Action],
                     where: str) -> dict[str, Any]:
    """One value of one axis -> flags (VARIANTS values are whole flag strings)."""
    if key == VARIANTS_KEY:
        return tokens_to_flags(shlex.split(raw), actions, f"{where} VARIANTS {raw!r}")
    action = actions.get(key)
    if action is None:
        raise SweepError(f"{where}: {key} is not a flag of python -m {DEFAULT_MODULE} "
                         f"(arrays are named after flags without '--', e.g. lr=(3e-4 1e-3))")
    if action.nargs == 0:
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return {key: True}
        if lowered in ("0", "false", "no", "off"):
            return {key: False}
        raise SweepError(f"{where}: {key} is a switch; use true or false, got {raw!r}")
    if action.nargs == "+":
        raise SweepError(f"{where}: {key} cannot be swept")
    return {key: _canonical_value(action, raw, f"{where} {key}")}


def _prune(flags: dict[str, Any]) -> dict[str, Any]:
    if flags.get("mode", "train") == "train":
        return {k: v for k, v in flags.items() if k not in DA_ONLY}
    return flags


def config_hash(flags: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """8 hex digits of sha1 over the sorted (flag, value) pairs that change the trained model.

    Flags equal to the CLI default (`defaults`, canonical strings) are left out, so spelling a
    default out (`--use_dtpm true`) does not make a new configuration."""
    defaults = defaults or {}
    items = sorted((k, v) for k, v in flags.items()
                   if k not in NOT_IN_IDENTITY and defaults.get(k, object()) != v)
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()[:8]


def cli_defaults(actions: dict[str, argparse.Action]) -> dict[str, Any]:
    """Canonical default value of every valued flag that has one."""
    defaults = {}
    for dest, action in actions.items():
        if action.nargs in (0, "+") or action.default is None:
            continue
        try:
            defaults[dest] = _canonical_value(action, str(action.default), "default")
        except SweepError:
            pass
    return defaults


def flags_to_argv(flags: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in flags.items():
        if value is True:
            argv.append(f"--{key}")
        elif key == "audio":
            argv += [f"--{key}", *str(value).split(" ")]
        else:
            argv += [f"--{key}", str(value)]
    return argv


@dataclasses.dataclass
class Config:
    hash: str
    flags: dict[str, Any]

    @property
    def run_id(self) -> str:
        return f"sweep-{self.hash}"


def expand(spec: SweepSpec, extra: Sequence[str] = ()) -> tuple[list[Config], int]:
    """All distinct configurations of the grid (file order) and the raw grid size."""
    actions = _actions(_cli_parser())
    defaults = cli_defaults(actions)
    fixed = tokens_to_flags(spec.fixed, actions, f"{spec.name}: FIXED")
    extra_flags = tokens_to_flags(extra, actions, "extra flags after --")
    per_axis = [[axis_value_flags(key, raw, actions, spec.name) for raw in values]
                for key, values in spec.axes]
    for key in RESERVED:
        for source, flags in [("FIXED", fixed), ("extra flags", extra_flags)] + [
                (f"array {k}", f) for (k, _), axis in zip(spec.axes, per_axis) for f in axis]:
            if key in flags:
                raise SweepError(f"{spec.name}: {source} sets --{key}; the sweep names runs "
                                 f"itself (sweep-<hash>)")
    configs: dict[str, Config] = {}
    for point in itertools.product(*per_axis):
        flags = dict(fixed)
        for part in point:
            flags.update(part)
        flags.update(extra_flags)
        flags = _prune({k: v for k, v in flags.items() if v is not False})
        digest = config_hash(flags, defaults)
        configs.setdefault(digest, Config(digest, flags))
    return list(configs.values()), spec.grid_size()


def sample(configs: list[Config], n: int | None, seed: int) -> list[Config]:
    """A seeded random subset of `n` configurations, kept in grid order (all when n is None)."""
    if n is None or n >= len(configs):
        return list(configs)
    if n < 1:
        raise SweepError("--samples must be at least 1")
    keep = sorted(random.Random(seed).sample(range(len(configs)), n))
    return [configs[i] for i in keep]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def command_for(config: Config, python: str, module: str, threads: int,
                results_root: Path | None) -> list[str]:
    argv = [python, "-m", module, *flags_to_argv(config.flags)]
    if results_root is not None and "results_root" not in config.flags:
        argv += ["--results_root", str(results_root)]
    return argv + ["--run_id", config.run_id, "--verbose", "0", "--threads", str(threads)]


# --------------------------------------------------------------------------- running

class SweepRunner:
    """Runs configurations in a pool of `jobs` subprocesses; keeps sweep.json / failed.txt."""

    def __init__(self, spec: SweepSpec, configs: list[Config], results_root: Path, jobs: int,
                 python: str, module: str, threads: int, extra_env: dict | None = None):
        self.spec = spec
        self.configs = configs
        self.results_root = results_root
        self.jobs = max(1, jobs)
        self.python = python
        self.module = module
        self.threads = threads
        self.sweep_dir = results_root / "sweeps" / spec.name
        self.log_dir = self.sweep_dir / "logs"
        self.state_path = self.sweep_dir / "sweep.json"
        self.failed_path = self.sweep_dir / "failed.txt"
        self.env = {**os.environ, **(extra_env or {})}
        self.entries: dict[str, dict] = {}

    # ---- bookkeeping
    def metrics_path(self, config: Config) -> Path:
        root = Path(config.flags.get("results_root", self.results_root))
        return root / config.run_id / "metrics.json"

    def command(self, config: Config) -> list[str]:
        return command_for(config, self.python, self.module, self.threads, self.results_root)

    def _load_state(self) -> None:
        if self.state_path.exists():
            try:
                self.entries = json.loads(self.state_path.read_text()).get("configs", {})
            except (OSError, ValueError):
                self.entries = {}

    def _save_state(self) -> None:
        from src.utils import io

        state = {"sweep": self.spec.name, "results_root": str(self.results_root),
                 "updated": _now(), "configs": self.entries}
        io.write_json(self.state_path, state)
        failed = [f"{h}\texit {e.get('exit_code')}\t{e.get('log', '')}\t"
                  f"{shlex.join(flags_to_argv(e['flags']))}"
                  for h, e in self.entries.items() if e.get("status") == "failed"]
        io.write_text(self.failed_path, "".join(line + "\n" for line in failed))

    def _set(self, config: Config, **fields: Any) -> None:
        entry = self.entries.setdefault(config.hash, {})
        entry.update({"run_id": config.run_id, "flags": config.flags,
                      "command": shlex.join(self.command(config)), **fields})
        self._save_state()

    # ---- main loop
    def run(self) -> int:
        lock = self._lock()
        try:
            return self._run()
        finally:
            lock.close()

    def _lock(self):
        """Hold `sweep.lock` while the sweep runs (see the module docstring); SweepError when
        another driver holds it."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.sweep_dir / "sweep.lock", "a+")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return handle
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise SweepError(f"sweep {self.spec.name} is already running (driver pid {holder}, "
                             f"lock {self.sweep_dir / 'sweep.lock'}); wait for it or stop it "
                             f"first") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        for stale in self.sweep_dir.glob(".*.tmp"):  # left by a killed driver's atomic writes
            stale.unlink(missing_ok=True)
        return handle

    def _stop_orphans(self) -> None:
        """Stop the children that an earlier driver, killed without cleaning up, left running
        (status `running`, their process still alive): SIGINT to each process group, SIGKILL
        after STOP_GRACE_SECONDS."""
        orphans = {h: e for h, e in self.entries.items()
                   if e.get("status") == "running" and e.get("pid")
                   and _runs(e["pid"], e.get("run_id", ""))}
        if not orphans:
            return
        print(f"sweep {self.spec.name}: an earlier run of this sweep was killed and left "
              f"{len(orphans)} configuration(s) running ("
              f"{', '.join(str(e['pid']) for e in orphans.values())}); stopping them first",
              file=sys.stderr, flush=True)
        for entry in orphans.values():
            _signal_group(entry["pid"], signal.SIGINT)
        killed = False
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while True:
            alive = [e for e in orphans.values() if _runs(e["pid"], e.get("run_id", ""))]
            if not alive:
                break
            if time.monotonic() > deadline:
                if killed:
                    raise SweepError(f"cannot stop pid(s) {', '.join(str(e['pid']) for e in alive)}"
                                     f" of an earlier run of sweep {self.spec.name}")
                for entry in alive:
                    _signal_group(entry["pid"], signal.SIGKILL)
                killed, deadline = True, time.monotonic() + 10.0
            time.sleep(0.1)
        for entry in orphans.values():
            entry.update({"status": "interrupted", "pid": None, "ended": _now()})

    def _run(self) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._load_state()
        self._stop_orphans()
        todo: list[Config] = []
        skipped = 0
        for config in self.configs:
            metrics = self.metrics_path(config)
            if metrics.exists():
                skipped += 1
                self.entries.setdefault(config.hash, {}).update(
                    {"status": "done", "skipped": True,
                     "run_id": config.run_id, "flags": config.flags,
                     "command": shlex.join(self.command(config)),
                     "uar_mean": _uar(metrics)})
            else:
                todo.append(config)
                self.entries.setdefault(config.hash, {})
                self.entries[config.hash].update(
                    {"status": "pending", "run_id": config.run_id, "flags": config.flags,
                     "command": shlex.join(self.command(config))})
        self._save_state()
        print(f"sweep {self.spec.name}: {len(self.configs)} configurations, {skipped} already "
              f"finished, {len(todo)} to run, {self.jobs} at a time x {self.threads} threads "
              f"-> {self.sweep_dir}", flush=True)

        running: dict[str, tuple[subprocess.Popen, Config, float, Any]] = {}
        stop: list[int] = []
        handlers = _install_handlers(stop)
        failed = done = 0
        try:
            queue = list(todo)
            while (queue or running) and not stop:
                while queue and len(running) < self.jobs and not stop:
                    config = queue.pop(0)
                    running[config.hash] = self._start(config)
                finished = [h for h, (proc, *_rest) in running.items() if proc.poll() is not None]
                if not finished:
                    time.sleep(0.1)
                    continue
                for digest in finished:
                    proc, config, started, log = running.pop(digest)
                    log.close()
                    ok = self._finish(config, proc.returncode, time.monotonic() - started)
                    done += ok
                    failed += not ok
            if stop:
                print(f"sweep {self.spec.name}: signal {stop[0]}, stopping {len(running)} "
                      f"running configuration(s)", file=sys.stderr, flush=True)
                self._stop_children(running, stop)
                print(f"sweep {self.spec.name}: stopped; finished folds are kept, re-run the "
                      f"same command to resume", file=sys.stderr, flush=True)
                return 128 + stop[0]
        finally:
            _restore_handlers(handlers)
        print(f"sweep {self.spec.name}: {done} finished, {failed} failed, {skipped} skipped "
              f"(already finished); table: {self.state_path}", flush=True)
        if failed:
            print(f"failed configurations: {self.failed_path}", file=sys.stderr, flush=True)
        return 1 if failed else 0

    def _start(self, config: Config):
        log_path = self.log_dir / f"{config.hash}.log"
        command = self.command(config)
        log = open(log_path, "a", buffering=1)
        log.write(f"# {_now()} {shlex.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        self._set(config, status="running", started=_now(), log=str(log_path), exit_code=None,
                  pid=proc.pid)
        print(f"[{_now()}] start {config.run_id}: {shlex.join(flags_to_argv(config.flags))}",
              flush=True)
        return proc, config, time.monotonic(), log

    def _finish(self, config: Config, code: int, seconds: float) -> bool:
        metrics = self.metrics_path(config)
        ok = code == 0 and metrics.exists()
        fields = {"status": "done" if ok else "failed", "skipped": False, "exit_code": code,
                  "seconds": round(seconds, 1), "ended": _now(), "pid": None}
        if ok:
            fields["uar_mean"] = _uar(metrics)
        self._set(config, **fields)
        log = self.entries[config.hash]["log"]
        if ok:
            uar = fields["uar_mean"]
            text = f"UAR {100 * uar:.2f}%" if isinstance(uar, (int, float)) else "done"
            print(f"[{_now()}] done  {config.run_id}: {text} ({seconds:.0f} s)", flush=True)
        else:
            why = f"exit {code}" if code else "exit 0 but no metrics.json"
            print(f"[{_now()}] FAILED {config.run_id}: {why}; log {log}", file=sys.stderr,
                  flush=True)
        return ok

    def _stop_children(self, running: dict, stop: list[int]) -> None:
        """SIGINT to every child (training exits between steps, finished folds stay); a second
        signal, or STOP_GRACE_SECONDS without exit, kills them."""
        for proc, *_rest in running.values():
            _signal_group(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(proc.poll() is None for proc, *_rest in running.values()):
            if len(stop) > 1 or time.monotonic() > deadline:
                for proc, *_rest in running.values():
                    if proc.poll() is None:
                        _signal_group(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        for digest, (proc, config, started, log) in running.items():
            proc.wait()
            log.close()
            self._set(config, status="interrupted", exit_code=proc.returncode, ended=_now(),
                      seconds=round(time.monotonic() - started, 1), pid=None)


def _signal_group(pid: int, signum: int) -> None:
    """Signal the process group of a child (each child leads its own session)."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _runs(pid: int, run_id: str) -> bool:
    """Whether `pid` is alive and still the process that trains `run_id` (a recorded pid can
    have been reused since; a zombie waiting to be reaped counts as gone)."""
    if Path("/proc/self").is_dir():  # Linux
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            return False
        return state != "Z" and run_id.encode() in argv
    try:
        os.killpg(pid, 0)
    except OSError:
        return False
    return True


def _install_handlers(stop: list[int]) -> dict:
    """SIGINT / SIGTERM append their number to `stop` (the run loop checks it)."""
    def handler(signum, _frame):
        stop.append(signum)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            pass
    return previous


def _restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _uar(metrics_path: Path):
    try:
        return json.loads(metrics_path.read_text()).get("uar_mean")
    except (OSError, ValueError):
        return None


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tune-hyperparameter.sh",
        description="Run a grid (or a seeded random sample of it) of training configurations; "
                    "resumable, failures logged, N at a time. Flags after -- go to every run.")
    p.add_argument("sweep_file", nargs="?", default=None,
                   help="sweep file (default sweeps/default.sh)")
    p.add_argument("--samples", type=int, default=None,
                   help="run a random sample of N configurations (seeded by --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --samples (default 0)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="configurations run at once")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands of the unfinished configurations, one per line")
    p.add_argument("--results_root", default=None,
                   help="results folder of the runs (default results/ of the repository)")
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow threads per run (default max(1, cores // j))")
    p.add_argument("--runner", default=os.environ.get("SER_SWEEP_PYTHON_MODULE", DEFAULT_MODULE),
                   help=argparse.SUPPRESS)
    return p


def resolve_sweep_file(name: str | None) -> Path:
    if name is None:
        return DEFAULT_SWEEP
    path = Path(name)
    if path.exists() or path.is_absolute():
        return path
    for candidate in (REPO_ROOT / path, REPO_ROOT / "sweeps" / path,
                      REPO_ROOT / "sweeps" / f"{path}.sh"):
        if candidate.exists():
            return candidate
    return path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        print("error: -j must be at least 1", file=sys.stderr)
        return 2
    try:
        spec = parse_sweep_file(resolve_sweep_file(args.sweep_file))
        configs, grid_size = expand(spec, extra)
        chosen = sample(configs, args.samples, args.seed)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.results_root:
        results_root = Path(args.results_root).resolve()
    else:
        from src.training.config import RunConfig

        results_root = Path(RunConfig().results_root)
    threads = args.threads or max(1, cpu_count() // args.jobs)
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    runner = SweepRunner(spec, chosen, results_root, args.jobs, sys.executable, args.runner,
                         threads, env)
    if args.dry_run:
        left = [c for c in chosen if not runner.metrics_path(c).exists()]
        print(f"# sweep {spec.name}: grid {grid_size}, {len(configs)} distinct, "
              f"{len(chosen)} chosen, {len(chosen) - len(left)} already finished",
              file=sys.stderr)
        for config in left:
            print(shlex.join(runner.command(config)))
        return 0
    try:
        return runner.run()
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
