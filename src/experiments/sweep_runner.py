"""Running a sweep: a pool of training subprocesses, resumable, with its state on disk.

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
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: sweeps run without a lock
    fcntl = None

from src.utils import io

from .sweep_grid import Config, command_for, flags_to_argv
from .sweep_spec import SweepError, SweepSpec

STOP_GRACE_SECONDS = 60.0


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1



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
        """Where the run of `config` writes its metrics.json (it is finished when this exists)."""
        root = Path(config.flags.get("results_root", self.results_root))
        return root / config.run_id / "metrics.json"

    def command(self, config: Config) -> list[str]:
        """The argv that runs `config` (see sweep_grid.command_for)."""
        return command_for(config, self.python, self.module, self.threads, self.results_root)

    def _load_state(self) -> None:
        if self.state_path.exists():
            try:
                self.entries = json.loads(self.state_path.read_text()).get("configs", {})
            except (OSError, ValueError):
                self.entries = {}

    def _save_state(self) -> None:
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
        """Run every unfinished configuration under the sweep lock; the exit code of the sweep
        (0 all finished, 1 some failed, 128 + signal when stopped)."""
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
        if fcntl is None:  # not POSIX: no lock
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

