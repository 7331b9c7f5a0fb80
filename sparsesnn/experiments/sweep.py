"""Grid sweeps: every combination of ``--grid`` values times every seed, each in its own run directory.

    sparsesnn sweep --config configs/mnist_dense.toml \\
        --grid sparse.method=esl,rigl,set,sdsnn,pqi --grid sparse.density=0.5,0.2,0.1,0.05 --seeds 3 [--jobs N]

* **Grid.** ``--grid KEY=V1,V2,...`` gives the values of one config key (parsed like ``--set`` values, as TOML; a
  comma inside brackets, braces or quotes does not split, so ``--grid 'model.params.hidden=[64],[64, 64]'`` works).
  The runs are the cartesian product of all grids times the seeds (``run.seed`` = 0..S-1 from ``--seeds S``, or
  ``--seed-list 3,7``); ``--set`` overrides apply to every run.
* **Dense.** The ``dense`` method keeps every synapse and refuses ``sparse.density != 1``. A combination whose
  method resolves to ``dense`` therefore runs at ``sparse.density = 1.0``, and the duplicates this creates collapse:
  ``--grid sparse.method=dense,rigl --grid sparse.density=0.5,0.1`` trains dense once per seed (the reference of
  "loss vs dense" in the report) and RigL at both densities.
* **Names.** A run is named from its grid settings and seed, ``method-rigl__density-0.1__seed-0`` (the shortest
  unique suffix of each dotted key; characters outside ``[A-Za-z0-9_.+=-]`` dropped or replaced), under ``--out``
  (default ``runs/sweeps/<config stem>``). The name is also the run's ``run.name``.
* **Validation up front.** Every combination is loaded and validated (config keys and values, method parameters)
  before anything runs, so a misspelt key fails at once, naming the key. Method parameters in the base config's
  ``sparse.params`` must suit every method of the grid: sweep methods from a recipe without them (each method's
  defaults), or make them a grid axis of their own.
* **Resumable.** ``sweep.json`` in the out directory lists every run with its overrides and status. Invoking the
  same sweep again skips finished runs (``summary.json`` present), continues unfinished ones from their checkpoint
  (``sparsesnn train --resume``) and starts the rest. A run directory whose ``config.toml`` differs from the
  sweep's config for it (say ``run.epochs`` was changed) is left alone and reported as failed, naming the keys.
* **Processes.** Runs are subprocesses ``python -m sparsesnn train --quiet ...``, ``--jobs`` at a time. Each gets
  ``run.threads = T`` so that jobs x T <= the usable cores: by default T is the config's ``run.threads`` (or 1)
  and jobs = cores // T; with ``--jobs`` alone, T = cores // jobs. A run's stdout and stderr go to ``stdout.log``
  and ``stderr.log`` in its directory; a failing run leaves the tail of its stderr in ``error.log`` and does not
  stop the others. The sweep's exit status is non-zero when any run failed.
* **Stopping.** Ctrl-C, SIGTERM and SIGUSR1 are passed on to every running training (which checkpoints after its
  current step and stops); the sweep waits for them, records them as 'interrupted' in ``sweep.json`` and exits with
  128 + the signal (130, 143, 138). Invoking it again resumes them. A second signal is passed on too (the trainings
  then stop at once, without a checkpoint).
* **Dry run.** ``--dry-run`` lists every run with what the sweep would do, after checking each as ``sparsesnn
  train`` would at its start (the data loads, the model builds, the learner accepts its settings for the run's
  budget); a run that would be refused is listed as ``invalid`` with the reason, and the exit status is 2.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsesnn.core.errors import ConfigError
from sparsesnn.core.files import atomic_write_text
from sparsesnn.train.components import start_problem
from sparsesnn.train.config import Config, config_differences, load_config, parse_override_value
from sparsesnn.train.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    RunDirBusyError,
    RunDirLock,
    read_summary,
    run_files_in,
)

#: the signals that stop a sweep as Ctrl-C does: each is passed on to every running training (which checkpoints and
#: stops), the runs are recorded as 'interrupted', and the sweep exits with 128 + the signal
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by a signal once its runs have checkpointed; ``signum`` gives the exit status 128 + signum."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


MANIFEST_FILE = "sweep.json"
LOCK_FILE = ".sweep.lock"
ERROR_FILE = "error.log"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
#: config keys that may differ between a run directory's config.toml and the sweep's config without mattering
_NEUTRAL_KEYS = frozenset({"run.threads"})
_NAME_OK = re.compile(r"[^A-Za-z0-9_.+=-]+")
_ERROR_TAIL_LINES = 40


# ----------------------------------------------------------------------------------------------------------------------
# the plan
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridAxis:
    """One ``--grid KEY=V1,V2`` entry: the dotted key and the raw text of each value."""

    key: str
    raw_values: tuple[str, ...]

    @property
    def values(self) -> list[Any]:
        return [parse_override_value(v) for v in self.raw_values]


@dataclass
class PlannedRun:
    """One run of the sweep: its name, directory, ``--set`` overrides and resolved config."""

    name: str
    run_dir: Path
    seed: int
    settings: dict[str, Any]  # grid key -> parsed value (after the dense collapse)
    overrides: list[str]  # every --set passed to `sparsesnn train`
    config: Config = field(repr=False)
    status: str = "pending"
    action: str = ""
    returncode: int | None = None
    wall_s: float | None = None
    error: str | None = None

    def manifest_entry(self, out_dir: Path) -> dict[str, Any]:
        try:
            rel = str(self.run_dir.relative_to(out_dir))
        except ValueError:
            rel = str(self.run_dir)
        return {
            "name": self.name,
            "run_dir": rel,
            "seed": self.seed,
            "settings": self.settings,
            "overrides": self.overrides,
            "status": self.status,
            "action": self.action,
            "returncode": self.returncode,
            "wall_s": self.wall_s,
            "error": self.error,
        }


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` on top-level commas (not inside ``[]``, ``{}`` or quotes).

    >>> split_values('0.5,0.1')
    ['0.5', '0.1']
    >>> split_values('[64],[64, 64],{ scope = "a,b" }')
    ['[64]', '[64, 64]', '{ scope = "a,b" }']
    """
    out: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return out


def parse_grid(items: Sequence[str]) -> list[GridAxis]:
    """Parse ``--grid KEY=V1,V2`` entries; a key given twice, or an empty value, is an error."""
    axes: list[GridAxis] = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        key, raw = (s.strip() for s in item.split("=", 1))
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--grid has an empty key in {item!r}")
        values = split_values(raw)
        if any(not v for v in values):
            raise ConfigError(f"--grid {key}: empty value in {raw!r}")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {key}: a value is repeated in {raw!r}")
        if any(a.key == key for a in axes):
            raise ConfigError(f"--grid {key} is given twice; list all its values in one --grid")
        axes.append(GridAxis(key, tuple(values)))
    return axes


def short_labels(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key ends with: ``sparse.density`` -> ``density``.

    >>> short_labels(["sparse.method", "sparse.density", "model.params.hidden"])
    {'sparse.method': 'method', 'sparse.density': 'density', 'model.params.hidden': 'hidden'}
    >>> short_labels(["sparse.params.N", "model.params.N"])
    {'sparse.params.N': 'sparse.params.N', 'model.params.N': 'model.params.N'}
    """
    labels = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        labels[key] = suffix
    return labels


def sanitize(text: str) -> str:
    """Make ``text`` safe for a directory name and ``run.name``: quotes and spaces dropped, other odd characters '-'.

    >>> sanitize('{ scope = "neuron" }')
    'scope=neuron'
    >>> sanitize('[64, 64]')
    '64-64'
    """
    text = re.sub(r"[\"'\s\[\]{}()]", "", text)
    return _NAME_OK.sub("-", text).strip("-") or "x"


def cpu_cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_sweep(
    config_path: str | Path,
    grid: Sequence[str],
    *,
    seeds: Sequence[int] = (0,),
    sets: Sequence[str] = (),
    out_dir: str | Path | None = None,
    threads: int | None = None,
) -> list[PlannedRun]:
    """Expand and validate the sweep: one :class:`PlannedRun` per (grid combination, seed), dense collapsed.

    Raises :class:`ConfigError` (naming the combination and the bad key) before anything runs. ``threads`` sets
    ``run.threads`` of every run unless ``sets`` or the grid set it.
    """
    config_path = Path(config_path)
    axes = parse_grid(grid)
    if not seeds:
        raise ConfigError("a sweep needs at least one seed")
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be distinct and >= 0, got {list(seeds)}")
    reserved = {"run.seed", "run.name"}
    for axis in axes:
        if axis.key in reserved:
            raise ConfigError(f"--grid {axis.key}: the sweep sets it itself (use --seeds / --seed-list for seeds)")
    for s in sets:
        if s.split("=", 1)[0].strip() in reserved:
            raise ConfigError(f"--set {s}: the sweep sets {s.split('=', 1)[0].strip()} itself")
    out = Path(out_dir) if out_dir is not None else Path("runs") / "sweeps" / config_path.stem
    labels = short_labels([a.key for a in axes])
    user_keys = {s.split("=", 1)[0].strip() for s in sets} | {a.key for a in axes}
    thread_set = [f"run.threads={threads}"] if threads and "run.threads" not in user_keys else []
    load_config(config_path, list(sets))  # the base with the sweep-wide overrides: its own errors first
    runs: list[PlannedRun] = []
    seen: dict[str, PlannedRun] = {}
    for seed in seeds:
        for combo in itertools.product(*[[(a.key, raw) for raw in a.raw_values] for a in axes]):
            items = dict(combo)
            grid_sets = [f"{k}={raw}" for k, raw in items.items()]
            where = ", ".join(grid_sets) or "the base config"
            try:
                config = load_config(config_path, [*sets, *grid_sets])
            except ConfigError as exc:
                raise ConfigError(f"sweep combination {where} (seed {seed}): {exc}") from None
            if config.sparse.method == "dense" and config.sparse.density != 1.0:
                # the dense method keeps every synapse: train it once per seed, at density 1
                items["sparse.density"] = "1.0"
                grid_sets = [f"{k}={raw}" for k, raw in items.items()]
                if "sparse.density" not in labels:
                    labels = {**labels, "sparse.density": "density"}
            name = "__".join([*(f"{labels[k]}-{sanitize(raw)}" for k, raw in items.items()), f"seed-{seed}"])
            overrides = [*sets, *grid_sets, *thread_set, f"run.seed={seed}", f"run.name={json.dumps(name)}"]
            if name in seen:
                if seen[name].overrides == overrides:
                    continue  # the dense collapse: the same run again
                raise ConfigError(
                    f"two sweep combinations get the same run name {name!r} ({seen[name].overrides} and "
                    f"{overrides}); make the grid values distinct"
                )
            try:
                config = load_config(config_path, overrides)
            except ConfigError as exc:
                raise ConfigError(f"sweep combination {where} (seed {seed}): {exc}") from None
            settings = {k: parse_override_value(raw) for k, raw in items.items()}
            run = PlannedRun(name, out / name, seed, settings, overrides, config)
            seen[name] = run
            runs.append(run)
    return runs


# ----------------------------------------------------------------------------------------------------------------------
# running it
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep did: the runs with their final status, and where the manifest is."""

    out_dir: Path
    manifest: Path
    runs: list[PlannedRun]
    jobs: int
    threads: int

    @property
    def failed(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.status == "failed"]

    @property
    def invalid(self) -> list[PlannedRun]:
        """The runs a dry run found ``sparsesnn train`` would refuse at start."""
        return [r for r in self.runs if r.status == "invalid"]

    @property
    def ok(self) -> bool:
        return all(r.status == "finished" for r in self.runs)


def choose_parallelism(config_threads: int, jobs: int | None, threads: int | None, cores: int) -> tuple[int, int]:
    """``(jobs, threads per run)`` with jobs x threads <= cores (at least one of each).

    >>> choose_parallelism(0, None, None, 8)
    (8, 1)
    >>> choose_parallelism(2, None, None, 8)
    (4, 2)
    >>> choose_parallelism(0, 3, None, 8)
    (3, 2)
    >>> choose_parallelism(0, 2, 4, 8)
    (2, 4)
    """
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if jobs is None:
        t = threads or config_threads or 1
        return max(1, cores // t), t
    return jobs, threads or max(1, cores // jobs)


def _existing_state(run: PlannedRun) -> tuple[str, str | None]:
    """``("finished" | "resume" | "fresh" | "conflict", reason)`` for the run's directory as it is now."""
    rd = run.run_dir
    if not (rd / CONFIG_FILE).is_file():
        return "fresh", None
    try:
        existing = load_config(rd / CONFIG_FILE)
    except ConfigError as exc:
        return "conflict", f"{rd / CONFIG_FILE} is not readable: {exc}"
    diffs = config_differences(existing, run.config, _NEUTRAL_KEYS)
    if diffs:
        return "conflict", (
            f"{rd} holds a run with another config than this sweep's ({'; '.join(diffs)}); "
            "delete it or sweep into another --out"
        )
    summary = read_summary(rd)
    if summary is not None and int(summary.get("epochs", 0)) >= run.config.run.epochs:
        return "finished", None
    if (rd / CHECKPOINT_FILE).is_file():
        return "resume", None
    return "fresh", None


def _command(run: PlannedRun, config_path: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "sparsesnn", "train", "--quiet"]
    if resume:
        return [*cmd, "--resume", str(run.run_dir)]
    cmd += ["--config", str(config_path), "--run-dir", str(run.run_dir)]
    if run_files_in(run.run_dir):  # a start of this same run that ended before its first checkpoint: set it aside
        cmd.append("--overwrite")
    for o in run.overrides:
        cmd += ["--set", o]
    return cmd


def _tail(path: Path, lines: int = _ERROR_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def write_manifest(path: Path, header: dict[str, Any], runs: Sequence[PlannedRun]) -> None:
    """Write ``sweep.json`` atomically: the sweep's settings and every run's overrides and status."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    body = {
        **header,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "counts": counts,
        "runs": [r.manifest_entry(path.parent) for r in runs],
    }
    atomic_write_text(path, json.dumps(body, indent=2) + "\n")


def run_sweep(
    config_path: str | Path,
    grid: Sequence[str],
    *,
    seeds: Sequence[int] = (0,),
    sets: Sequence[str] = (),
    out_dir: str | Path | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
    poll_s: float = 0.2,
) -> SweepResult:
    """Plan, validate and run the sweep (see the module docstring); returns what happened to every run.

    A Ctrl-C, SIGTERM or SIGUSR1 is passed on to the running trainings (which checkpoint and stop), the manifest is
    written, and :class:`SweepInterrupted` (a ``KeyboardInterrupt`` with ``signum``) propagates; the next invocation
    resumes them.
    """
    say = log or (lambda _msg: None)
    config_path = Path(config_path)
    cores = cpu_cores()
    base = load_config(config_path, list(sets))
    jobs_n, threads_n = choose_parallelism(base.run.threads, jobs, threads, cores)
    runs = plan_sweep(config_path, grid, seeds=seeds, sets=sets, out_dir=out_dir, threads=threads_n)
    out = Path(out_dir) if out_dir is not None else Path("runs") / "sweeps" / config_path.stem
    manifest = out / MANIFEST_FILE
    header = {
        "config": str(config_path),
        "grid": [{"key": a.key, "values": list(a.raw_values)} for a in parse_grid(grid)],
        "seeds": list(seeds),
        "sets": list(sets),
        "jobs": jobs_n,
        "threads_per_run": threads_n,
    }
    states = {}
    for run in runs:
        state, reason = _existing_state(run)
        states[run.name] = state
        if state == "finished":
            run.status, run.action = "finished", "skipped"
        elif state == "conflict":
            run.status, run.action, run.error = "failed", "conflict", reason
    todo = [r for r in runs if r.status == "pending"]
    jobs_n = max(1, min(jobs_n, len(todo))) if todo else jobs_n
    say(
        f"sweep: {len(runs)} runs in {out} ({len(runs) - len(todo)} already settled, {len(todo)} to run; "
        f"{jobs_n} at a time x {threads_n} threads on {cores} cores)"
    )
    result = SweepResult(out, manifest, runs, jobs_n, threads_n)
    if dry_run:
        cache: dict[str, Any] = {}
        for r in runs:
            if r.status == "pending":
                problem = start_problem(r.config, cache)
                if problem is not None:
                    r.status, r.error = "invalid", problem
        for r in runs:
            state = states[r.name] if r.status == "pending" else r.status
            if r.status == "invalid":
                state = f"invalid: {r.error}"
            say(f"  {r.name}: {state}  {' '.join(r.overrides)}")
        if result.invalid:
            say(f"sweep: {len(result.invalid)} of {len(runs)} runs would be refused at start (invalid above)")
        return result
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock_sweep_dir(out)
    try:
        return _run_planned(result, runs, todo, states, header, config_path, jobs_n, threads_n, say, poll_s)
    finally:
        lock.release()


def _stop_runs(running: dict[str, tuple[PlannedRun, subprocess.Popen[bytes], float]], signum: int) -> None:
    """Pass ``signum`` on to every running training (each checkpoints after its current step and stops) and wait for
    them; one that has not ended after two minutes is killed (its previous checkpoint stays)."""
    for _run, proc, _t0 in running.values():
        if proc.poll() is None:
            proc.send_signal(signum)
    for _run, proc, _t0 in running.values():
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lock_sweep_dir(out: Path) -> RunDirLock:
    """Hold the one-writer lock of ``OUT/.sweep.lock`` for the sweep's lifetime
    (:class:`~sparsesnn.train.rundir.RunDirLock`, the lock every run directory has), so that a second sweep started
    in the same directory (which would start the same runs twice) is refused instead of racing the first."""
    try:
        return RunDirLock(out, LOCK_FILE).acquire()
    except RunDirBusyError as exc:
        raise ConfigError(f"another sweep is running in {out} ({exc}); wait for it or choose another --out") from None


def _run_planned(
    result: SweepResult,
    runs: list[PlannedRun],
    todo: list[PlannedRun],
    states: dict[str, str],
    header: dict[str, Any],
    config_path: Path,
    jobs_n: int,
    threads_n: int,
    say: Callable[[str], None],
    poll_s: float,
) -> SweepResult:
    manifest = result.manifest
    write_manifest(manifest, header, runs)
    queue = list(todo)
    running: dict[str, tuple[PlannedRun, subprocess.Popen[bytes], float]] = {}
    done = len(runs) - len(todo)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads_n)
    stop: list[int] = []  # the signals received, in order

    def on_signal(signum: int, _frame: Any) -> None:
        if stop:  # a second signal: pass it on now (the trainings stop at once)
            for _run, proc, _t0 in running.values():
                if proc.poll() is None:
                    proc.send_signal(signum)
        stop.append(signum)

    previous = (
        {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    try:
        while (queue or running) and not stop:
            while queue and len(running) < jobs_n and not stop:
                run = queue.pop(0)
                resume = states[run.name] == "resume"
                run.run_dir.mkdir(parents=True, exist_ok=True)
                (run.run_dir / ERROR_FILE).unlink(missing_ok=True)
                with open(run.run_dir / STDOUT_FILE, "wb") as fo, open(run.run_dir / STDERR_FILE, "wb") as fe:
                    # a session of its own: a terminal's Ctrl-C reaches only the sweep, which passes one SIGINT on
                    proc = subprocess.Popen(
                        _command(run, config_path, resume), stdout=fo, stderr=fe, env=env, start_new_session=True
                    )
                run.status, run.action = "running", "resumed" if resume else "started"
                running[run.name] = (run, proc, time.perf_counter())
                write_manifest(manifest, header, runs)
            time.sleep(poll_s)
            for name, (run, proc, t0) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del running[name]
                done += 1
                run.returncode, run.wall_s = rc, round(time.perf_counter() - t0, 3)
                if rc == 0 and read_summary(run.run_dir) is not None:
                    run.status = "finished"
                    say(f"[{done}/{len(runs)}] {name}: finished ({run.action}) in {run.wall_s:.1f} s")
                else:
                    run.status = "failed"
                    tail = _tail(run.run_dir / STDERR_FILE)
                    atomic_write_text(run.run_dir / ERROR_FILE, tail + "\n")
                    run.error = tail.splitlines()[-1] if tail else f"exit status {rc}"
                    say(
                        f"[{done}/{len(runs)}] {name}: FAILED (exit {rc}): {run.error}  "
                        f"(see {run.run_dir / ERROR_FILE})"
                    )
                write_manifest(manifest, header, runs)
        if stop:
            _stop_runs(running, stop[0])
    except KeyboardInterrupt:  # not the main thread (no handler of ours): a Ctrl-C is passed on as before
        stop.append(int(signal.SIGINT))
        _stop_runs(running, signal.SIGINT)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop:
        for run, proc, _t0 in running.values():
            run.status, run.returncode = "interrupted", proc.returncode
        write_manifest(manifest, header, runs)
        name = signal.Signals(stop[0]).name
        raise SweepInterrupted(
            f"sweep stopped by {name}; its running trainings checkpointed. Run the same command again to resume "
            f"({manifest})",
            stop[0],
        )
    for run in runs:
        if run.status == "failed" and run.action == "conflict":
            say(f"{run.name}: FAILED: {run.error}")
    write_manifest(manifest, header, runs)
    return result
