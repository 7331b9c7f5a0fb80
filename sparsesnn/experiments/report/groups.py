"""Runs grouped by their settings, seed aside, and named by what differs between them.

Runs whose configs agree on everything but the seed (:meth:`~.runs.RunData.group_key`) form a **group**; a group's
numbers are the mean and the spread (sample standard deviation, n - 1) over its seeds, taken at the **last epoch**
of each run (:data:`STAT_FIELDS`). Groups whose settings differ only in ``sparse.density`` form a **series** (one
curve per method). A sparse group's accuracy loss is measured against the dense group with the same
non-``[sparse]`` settings.

Labels come from what differs (:func:`describe`): a group is its method, the settings in which it differs from the
other groups (``data.name``, ``sparse.params``, ...) and its density target; a run (:func:`run_labels`) is its
group's description plus its seed where that is what tells runs apart, and its directory where nothing else does.
No two different groups or runs share a label; ``run.name`` (which every run launched from one recipe may share) is
not used for it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sparsesnn.experiments.report.runs import RunData, recipe_settings


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


@dataclass
class Group:
    """Runs that differ only in their seed."""

    key: str
    runs: list[RunData]
    series: str = ""
    label: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> RunData:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def target_density(self) -> float:
        return self.first.target_density

    @property
    def dataset(self) -> str:
        return self.first.dataset


#: results.json name -> value of one run (a group holds the mean and the std of each over its seeds)
STAT_FIELDS = {
    "test_acc": lambda r: r.last.get("test_acc"),
    "best_test_acc": lambda r: (r.summary or {}).get("best_test_acc"),
    "selected_test_acc": lambda r: (r.summary or {}).get("selected_test_acc"),  # runs holding out a validation split
    "density": lambda r: r.last.get("density"),
    "density_all": lambda r: r.last.get("density_all"),
    "mac_density": lambda r: r.last.get("mac_density"),  # the fraction of the masked layers' dense MACs that survives
    "sops": lambda r: r.last.get("sops"),
    "macs": lambda r: r.last.get("macs"),
    "energy_uJ": lambda r: r.last.get("energy_uJ"),
    "firing_rate": lambda r: r.last.get("firing_rate"),
    "params": lambda r: r.params,
    "train_time_s": lambda r: (r.summary or {}).get("train_time_s"),
}


def _fmt_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def _sets(settings: dict[str, Any], key: str) -> bool:
    """Whether a run's settings give ``key`` a value (absent, None and an empty ``params`` table do not)."""
    return settings.get(key) not in (None, {})


def _setting_text(settings: dict[str, Any], key: str) -> str:
    return f"{key}={_fmt_value(settings[key]) if _sets(settings, key) else 'unset'}"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def describe(settings: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(series, label)`` for each of several runs' or groups' settings (:func:`recipe_settings`), named by what
    differs between them, with no label given to two different settings.

    The series is the method plus, in brackets, every key that the settings which set it set differently (a key
    only one kind of run has, such as the distillation runs' ``[distill]`` section, is told apart by the method
    already; ``sparse.*`` keys are left out of the dense method's); the label adds ``@ density`` for a sparse method.
    Where two different settings would still share a label (a key that one sets and the other leaves at its
    default, say, or two dense runs whose ``[sparse]`` tables differ), every key in which they differ is added, shown
    as ``unset`` where one of them does not set it; a last resort numbers what is left (values that print alike).

    >>> describe([{"sparse.method": "rigl", "sparse.density": 0.1, "data.name": "mnist"},
    ...           {"sparse.method": "rigl", "sparse.density": 0.1, "data.name": "fashion"}])[0]
    ('rigl (data.name=mnist)', 'rigl (data.name=mnist) @ 0.1')
    """
    keys = sorted({k for s in settings for k in s})
    varying = [k for k in keys if len({_dumps(s[k]) for s in settings if _sets(s, k)}) > 1]
    methods = [str(s.get("sparse.method", "dense")) for s in settings]
    extras: list[list[str]] = []
    for s, method in zip(settings, methods, strict=True):
        extra = [k for k in varying if k not in ("sparse.method", "sparse.density") and _sets(s, k)]
        if method == "dense":  # sparse.* settings mean nothing for the dense method
            extra = [k for k in extra if not k.startswith("sparse.")]
        extras.append(extra)

    def named(i: int) -> tuple[str, str]:
        s, method = settings[i], methods[i]
        series = method + (" (" + ", ".join(_setting_text(s, k) for k in extras[i]) + ")" if extras[i] else "")
        return series, series if method == "dense" else f"{series} @ {float(s.get('sparse.density', 1.0)):g}"

    out = [named(i) for i in range(len(settings))]
    dumps = [_dumps(s) for s in settings]  # equal settings keep one label: only different ones are told apart
    for members in _same_labels([label for _, label in out], dumps):
        differ = [k for k in keys if len({_dumps(settings[i].get(k)) for i in members}) > 1]
        for i in members:
            extras[i] = sorted({*extras[i], *differ})
            out[i] = named(i)
    for members in _same_labels([label for _, label in out], dumps):  # values that differ but print alike
        number = {d: n for n, d in enumerate(dict.fromkeys(dumps[i] for i in members), 1)}
        for i in members:
            out[i] = (f"{out[i][0]} #{number[dumps[i]]}", f"{out[i][1]} #{number[dumps[i]]}")
    return out


def _same_labels(labels: Sequence[str], keys: Sequence[str] | None = None) -> list[list[int]]:
    """Indices of ``labels`` that share their label with another whose ``keys`` entry differs (all others when
    ``keys`` is None), one list per shared label."""
    where: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        where.setdefault(label, []).append(i)
    kinds = keys if keys is not None else [str(i) for i in range(len(labels))]
    return [members for members in where.values() if len({kinds[i] for i in members}) > 1]


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """A label for each run, unique among ``runs``: :func:`describe` of the runs' settings, then the seed where
    runs with that label differ in it, then the run directory where two runs still share a label (a recipe run
    twice with the same seed)."""
    settings = []
    for r in runs:
        s = recipe_settings(r.config)
        if r.teacher_recipe is not None:
            s["distill.teacher_run"] = r.teacher_recipe
        settings.append(s)
    labels = [label for _, label in describe(settings)]
    for members in _same_labels(labels):
        if len({runs[i].seed for i in members}) > 1:
            for i in members:
                labels[i] += f", seed {runs[i].seed}"
    for members in _same_labels(labels):
        for i in members:
            labels[i] += f" [{runs[i].run_dir.name}]"
    for members in _same_labels(labels):  # equal directory names in different places
        for i in members:
            labels[i] += f" [{runs[i].run_dir}]"
    return labels


def group_runs(runs: Sequence[RunData]) -> list[Group]:
    """Group finished runs by their settings (seed aside), name series and labels (:func:`describe`), aggregate
    over seeds."""
    groups: dict[str, Group] = {}
    for r in runs:
        if r.finished:
            groups.setdefault(r.group_key(), Group(r.group_key(), [])).runs.append(r)
    glist = list(groups.values())
    settings = [json.loads(g.key) for g in glist]
    for g, (series, label) in zip(glist, describe(settings), strict=True):
        g.runs.sort(key=lambda r: r.seed)
        g.series, g.label = series, label
        for name, get in STAT_FIELDS.items():
            mean, std = _mean_std([get(r) for r in g.runs])
            g.stats[f"{name}_mean"], g.stats[f"{name}_std"] = mean, std
        g.stats["n"] = len(g.runs)
        g.stats["seeds"] = [r.seed for r in g.runs]
    for g, s in zip(glist, settings, strict=True):
        dense = _dense_reference(g, s, glist, settings)
        acc, dacc = g.stats["test_acc_mean"], dense.stats["test_acc_mean"] if dense else None
        g.stats["acc_loss_vs_dense_pt"] = (dacc - acc) * 100 if dense is not None and dense is not g else None
        g.stats["dense_reference"] = dense.label if dense is not None and dense is not g else None
    glist.sort(key=lambda g: (g.method != "dense", g.series, -g.target_density))
    return glist


def _dense_reference(g: Group, s: dict[str, Any], groups: list[Group], settings: list[dict[str, Any]]) -> Group | None:
    """The dense group whose settings outside ``[sparse]`` and ``[distill]`` (the method's own) equal ``g``'s."""

    def outside(settings_of: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in settings_of.items() if not k.startswith(("sparse.", "distill."))}

    for other, so in zip(groups, settings, strict=True):
        if other.method == "dense" and outside(so) == outside(s):
            return other
    return None
