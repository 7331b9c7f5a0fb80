"""Run directories as the engine wrote them (``config.toml``, ``metrics.jsonl``, ``summary.json``), read for the
report: :class:`RunData`, :func:`read_run`, and :func:`expand_run_dirs`, which turns run dirs, sweep dirs and dirs
of runs into run directories.

A run without ``summary.json`` (failed or unfinished) is read but not finished (:attr:`RunData.finished`): the report
lists it and does not count it. :meth:`RunData.group_key` is what a run computes, seed aside: ``run.seed``,
``run.name`` and where/how it ran are ignored (:data:`IGNORED_KEYS`), and a distillation teacher given as a run
directory counts by its recipe, not its path.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsesnn.core.errors import SparseSNNError
from sparsesnn.train.config import flatten
from sparsesnn.train.rundir import CONFIG_FILE, is_run_dir, read_metrics, read_summary

#: config keys that do not change what a run computes (or that tell seeds apart): ignored when grouping
IGNORED_KEYS = frozenset(
    {
        "run.seed",
        "run.name",
        "run.out_dir",
        "run.threads",
        "run.device",
        "run.checkpoint_every_steps",
        "run.tensorboard",
        "data.num_workers",
        "data.pin_memory",
        "data.root",
    }
)


@dataclass
class RunData:
    """One run directory as read from disk."""

    run_dir: Path
    config: dict[str, Any]  # flattened: dotted key -> value
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    #: the teacher run's recipe, seed aside (``distill.teacher_run`` names a run directory that can be read)
    teacher_recipe: str | None = None

    @property
    def name(self) -> str:
        return str(self.config.get("run.name", self.run_dir.name))

    @property
    def method(self) -> str:
        return str(self.config.get("sparse.method", "dense"))

    @property
    def target_density(self) -> float:
        return float(self.config.get("sparse.density", 1.0))

    @property
    def dataset(self) -> str:
        return str(self.config.get("data.name", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("run.seed", 0))

    @property
    def last(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def finished(self) -> bool:
        return self.summary is not None and bool(self.metrics)

    @property
    def params(self) -> int | None:
        layers = (self.summary or {}).get("layers")
        return sum(int(r["active"]) for r in layers) if layers else None

    def group_key(self) -> str:
        """The settings that make this run what it is, seed aside, as canonical JSON.

        A teacher given as a run directory counts by its recipe, not its path: distillation runs whose teachers
        are the same recipe with different seeds (each seed distilled from its own dense run) form one group.
        """
        settings = recipe_settings(self.config)
        if self.teacher_recipe is not None:
            settings["distill.teacher_run"] = self.teacher_recipe
        return json.dumps(settings, sort_keys=True)


def recipe_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A flattened config without the keys that tell seeds apart or do not change the computation."""
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories from run dirs, sweep dirs (the runs their ``sweep.json`` lists) or dirs of runs."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise SparseSNNError(f"{p}: not a directory")
        if is_run_dir(p):
            found = [p]
        elif (p / "sweep.json").is_file():
            manifest = json.loads((p / "sweep.json").read_text(encoding="utf-8"))
            found = [p / r["run_dir"] for r in manifest.get("runs", [])]
            found = [d for d in found if is_run_dir(d)]
        else:
            found = sorted(d for d in p.iterdir() if d.is_dir() and is_run_dir(d))
        if not found:
            raise SparseSNNError(f"{p}: holds no run (no config.toml with metrics.jsonl, no sweep.json)")
        out.extend(d for d in found if d.resolve() not in {o.resolve() for o in out})
    return out


def read_run(run_dir: Path) -> RunData:
    """Read one run directory (``config.toml`` raw, not re-validated, so older runs still read)."""
    try:
        config = tomllib.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SparseSNNError(f"{run_dir / CONFIG_FILE}: cannot read ({exc})") from None
    metrics = read_metrics(run_dir)
    summary = read_summary(run_dir)
    flat = flatten(config)
    return RunData(run_dir, flat, metrics, summary, _teacher_recipe(flat.get("distill.teacher_run"), run_dir))


def _teacher_recipe(teacher_run: Any, run_dir: Path) -> str | None:
    """``"<method> run, recipe <hash>"`` for a teacher run directory whose config reads (seed and name aside)."""
    if not isinstance(teacher_run, str) or not teacher_run:
        return None
    for candidate in (Path(teacher_run), run_dir / teacher_run):
        try:
            config = flatten(tomllib.loads((candidate / CONFIG_FILE).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        recipe = json.dumps(recipe_settings(config), sort_keys=True)
        digest = hashlib.sha1(recipe.encode()).hexdigest()[:8]
        return f"{config.get('sparse.method', 'dense')} run, recipe {digest}"
    return None
